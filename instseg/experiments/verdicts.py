"""The paper rows and comparison families of the image tables (notebooks 01-03), wired by name.

Why a module: a notebook that pairs our rows with the paper's by list position silently compares
the wrong rows when a row is inserted (it happened: a headline read the MaskX row as CPMask's).
Here every paper row is found by its content (:func:`~instseg.experiments.paper.paper_row`) and
every comparison names its two rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from instseg.experiments.comparison import Pair, Verdict, judge
from instseg.experiments.paper import paper_row
from instseg.experiments.stats import instance_ious

# our row name -> the paper row's identifying cells, per paper table
PAPER_ROWS: dict[str, dict[str, dict[str, Any]]] = {
    "table_3_1": {"t31_baseline": {"contour": False, "mask": False}, "t31_mask": {"contour": False, "mask": True},
                  "t31_contour": {"contour": True, "mask": False},
                  "t31_contour_mask": {"contour": True, "mask": True}},
    "table_3_2": {"t32_mask": {"guidance": False}, "t32_guidance_mask": {"guidance": True, "contour": False},
                  "t32_guidance_contour_mask": {"guidance": True, "contour": True}},
    "table_3_3": {"t33_single_fcn": {"structure": "Single Layer", "fcn": True},
                  "t33_single_gcn": {"structure": "Single Layer", "gcn": True},
                  "t33_bilayer_fcn": {"structure": "Bilayer", "fcn": True},
                  "t33_bilayer_gcn": {"structure": "Bilayer", "gcn": True}},
    "table_3_4": {"t34_fcos_fcn": {"name": "FCOS + Baseline"}, "t34_fcos_bcnet": {"name": "FCOS + Ours"},
                  "t34_frcnn_fcn": {"name": "Faster R-CNN + Baseline"},
                  "t34_frcnn_bcnet": {"name": "Faster R-CNN + Ours"}},
    "table_3_5": {"t35_amodal_mrcnn": {"name": "AmodalMRCNN"}, "t35_orcnn": {"name": "ORCNN"},
                  "t35_bcnet": {"name": "BCNet"}},
    "table_3_6": {"t36_mask_rcnn": {"name": "Mask R-CNN"}, "t36_bcnet": {"name": "BCNet"}},
    "table_3_7": {"t37_e2e": {"name": "Mask R-CNN"}, "t33_single_fcn": {"name": "Mask R-CNN"},
                  "t33_bilayer_gcn": {"name": "Ours"}, "t37_train": {"name": "Ours"}},
    # our heads on the frozen ResNet-18 Faster R-CNN beside the paper's ResNet-50 rows
    "table_3_8": {"t33_single_fcn": {"name": "Mask R-CNN", "backbone": "ResNet-50"},
                  "t33_bilayer_gcn": {"name": "BCNet + Faster R-CNN", "backbone": "ResNet-50"}},
}


def paper_rows(table: str, rows: Iterable[str] | None = None) -> dict[str, pd.Series]:
    """The paper's row for each of our rows of ``table`` (all mapped rows, or ``rows`` only)."""
    mapping = PAPER_ROWS[table]
    wanted = list(mapping) if rows is None else [r for r in rows if r in mapping]
    return {r: paper_row(table, **mapping[r]) for r in wanted}


def paper_difference(table: str, a: str, b: str, column: str) -> float | None:
    """The paper's ``b - a`` in ``column`` (None when either row has no paper counterpart)."""
    mapping = PAPER_ROWS[table]
    if a not in mapping or b not in mapping:
        return None
    return float(paper_row(table, **mapping[b])[column]) - float(paper_row(table, **mapping[a])[column])


class InstanceIous:
    """Per-instance IoU tables (instances x seeds) of trained heads on an eval set, computed once
    per (trained configuration, set) however many table rows share the configuration."""

    def __init__(self, gt: dict, results: Mapping[tuple[str, int, str], list[dict]], runs: pd.DataFrame,
                 subsets: Mapping[str, dict[str, Any]] | None = None) -> None:
        """``results[(row, seed, set)]``: COCO results as an
        :class:`~instseg.experiments.frozen_heads.AblationRun` holds them; ``runs``: its rows
        (``variant``, ``config``, ``seed``); ``subsets[set]``: keyword arguments of
        :func:`instance_ious` (``image_ids``, ``category_ids``, ``amodal``) for that set."""
        self.gt, self.results, self.subsets = gt, results, dict(subsets or {})
        self.config = runs.drop_duplicates("variant").set_index("variant")["config"].to_dict()
        self.seeds = runs.groupby("variant")["seed"].apply(list).to_dict()
        self._done: dict[tuple[str, str], pd.DataFrame] = {}

    def table(self, row: str, eval_set: str) -> pd.DataFrame:
        key = (self.config.get(row, row), eval_set)
        if key not in self._done:
            by_seed = {s: self.results[(row, s, eval_set)] for s in self.seeds[row]}
            self._done[key] = instance_ious(self.gt, by_seed, **self.subsets.get(eval_set, {}))
        return self._done[key]

    def for_pairs(self, pairs: Sequence[tuple[str, str]], eval_set: str) -> dict[str, pd.DataFrame]:
        return {r: self.table(r, eval_set) for pair in pairs for r in pair}


def table_family(runs: pd.DataFrame, table: str, pairs: Sequence[tuple[str, str]], metrics: Mapping[str, str],
                 ious: InstanceIous | None = None, metric_sets: Mapping[str, str] | None = None,
                 row_key: str = "variant") -> list[Verdict]:
    """Judge ``pairs`` x ``metrics`` (our metric -> the paper's column) as one Holm family, each
    with the paper's difference; with ``ious``, a metric whose eval set ``metric_sets[metric]``
    names (e.g. ``{"val_occ_AP": "val_occ"}``) is tested instance by instance on that set."""
    specs, tables = [], {}
    for metric, column in metrics.items():
        eval_set = (metric_sets or {}).get(metric)
        if ious is not None and eval_set is not None:
            tables[eval_set] = ious.for_pairs(pairs, eval_set)
        for a, b in pairs:
            specs.append(Pair(a, b, metric, paper_difference(table, a, b, column) if table in PAPER_ROWS else None,
                              eval_set if eval_set in tables else None))
    return judge(runs, specs, tables, row_key=row_key)


def verdict_lines(verdicts: Sequence[Verdict], labels: Mapping[str, str]) -> str:
    """Markdown bullet lines, one per verdict, with our rows' labels."""
    return "\n".join("- " + v.sentence(labels.get(v.a, v.a), labels.get(v.b, v.b)) for v in verdicts)


def table_4_1_rows(base_name: str) -> dict[str, str]:
    """Our Table 4.1 rows for the direction whose base half is ``base_name``: row name -> label."""
    return {f"fcn_{base_name}": "Mask R-CNN (class-agnostic)", "grabcut": "Mask GrabCut",
            f"maskx_{base_name}": "MaskX R-CNN (weight transfer)", f"cpmask_{base_name}": "CPMask",
            "fcn_oracle": "Oracle Mask R-CNN", "cpmask_oracle": "Oracle CPMask"}


_TABLE_4_1_PAPER = {"fcn": "Mask R-CNN", "grabcut": "Mask GrabCut", "maskx": "MaskX R-CNN", "cpmask": "Ours",
                    "fcn_oracle": "Oracle Mask R-CNN", "cpmask_oracle": "Oracle Ours"}


def table_4_1_paper_rows(base_name: str) -> dict[str, pd.Series]:
    """The paper's Table 4.1 row (by method name) for each of our rows of that direction."""
    out = {}
    for row in table_4_1_rows(base_name):
        key = row if row in _TABLE_4_1_PAPER else row.removesuffix(f"_{base_name}")
        out[row] = paper_row("table_4_1", name=_TABLE_4_1_PAPER[key])
    return out


def row_means(runs: pd.DataFrame, names: Mapping[str, str], metric: str, row_key: str = "variant") -> dict[str, float]:
    """``{key: mean of metric over the seeds of row names[key]}``: headline numbers taken by row
    name, so a row inserted into a table cannot shift them onto another row."""
    out = {}
    for key, name in names.items():
        values = runs.loc[runs[row_key] == name, metric]
        if values.empty:
            raise KeyError(f"no runs of row {name!r} for headline {key!r}")
        out[key] = float(values.mean())
    return out
