"""The source text's tables, read from the shipped YAML, for side-by-side display only."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

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
