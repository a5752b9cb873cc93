"""The source text's tables, read from the shipped YAML, for side-by-side display only."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
import yaml


@lru_cache(maxsize=1)
def paper_tables() -> dict[str, Any]:
    text = resources.files("instseg.reference").joinpath("paper_tables.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def paper_table(name: str) -> pd.DataFrame:
    """One table (e.g. ``table_3_1``) as a DataFrame whose columns say they are the paper's."""
    tables = paper_tables()["tables"]
    if name not in tables:
        raise KeyError(f"no table {name!r}; known: {', '.join(tables)}")
    return pd.DataFrame(tables[name]["rows"])


def paper_fact(contains: str) -> list[str]:
    """Prose facts of the source text that mention ``contains`` (case-insensitive)."""
    return [f["fact"] for f in paper_tables()["prose_facts"] if contains.lower() in f["fact"].lower()]


def paper_row(table_name: str, /, **match: Any) -> pd.Series:
    """The one row of the paper's table ``table_name`` whose columns equal ``match`` (e.g.
    ``paper_row("table_3_3", structure="Bilayer", gcn=True)``): rows are found by what they are,
    never by position, so a reordered or extended table cannot pair the wrong numbers."""
    table = paper_table(table_name)
    unknown = sorted(set(match) - set(table.columns))
    if unknown:
        raise KeyError(f"{table_name} has no columns {unknown}; columns: {list(table.columns)}")
    hit = table[np.logical_and.reduce([table[k] == v for k, v in match.items()])] if match else table
    if len(hit) != 1:
        raise KeyError(f"{len(hit)} rows of {table_name} match {match}; need exactly one")
    return hit.iloc[0]
