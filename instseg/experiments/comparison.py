"""Our rows beside the paper's: mean ± std over seeds, the paper's numbers in their own columns,
and a verdict per comparison saying whether the paper's direction holds on our benchmark.

Why a verdict and not just the table: at CPU scale an effect is often about the size of the
seed spread (DESIGN), so "BCNet is higher" must be weighed against the spread before it is read
as the paper's effect reproduced.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from instseg.experiments.stats import summarize

# Our metric -> the paper's column, for the COCO / COCO-OCC tables of chapter 3.
OCCLUSION_COLUMNS = {"val_occ_AP": "coco_occ_ap", "val_occ_AP50": "coco_occ_ap50",
                     "val_AP": "coco_ap", "val_AP50": "coco_ap50"}


def mean_std(mean: float, std: float) -> str:
    """``"31.20 ± 0.45"``; the std is left out when undefined (one seed), the cell is "-" when the
    metric is (e.g. no instance of that size)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if std is None or math.isnan(std):
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {std:.2f}"


def side_by_side(runs: pd.DataFrame, rows: Sequence[str], labels: Sequence[str], paper: pd.DataFrame | None,
                 columns: Mapping[str, str | None], row_key: str = "variant") -> pd.DataFrame:
    """One row per entry of ``rows`` (values of ``runs[row_key]``, in that order), labelled by
    ``labels``: for each of our metrics ``ours <metric>`` as mean ± std over the seeds, and beside
    it ``paper <column>`` from the same-position row of ``paper`` (``columns`` maps our metric to
    the paper's column; None, or no ``paper``, when the paper has no counterpart)."""
    if len(rows) != len(labels):
        raise ValueError(f"{len(rows)} rows but {len(labels)} labels")
    if paper is not None and len(paper) != len(rows):
        raise ValueError(f"the paper's table has {len(paper)} rows, ours {len(rows)}: align them explicitly")
    missing = [r for r in rows if r not in set(runs[row_key])]
    if missing:
        raise KeyError(f"no runs for {missing}")
    stats = summarize(runs[runs[row_key].isin(rows)], row_key, list(columns))
    table = pd.DataFrame({"row": list(labels), "seeds": [int(stats.loc[r, "n"]) for r in rows]})
    for metric, paper_column in columns.items():
        table[f"ours {metric}"] = [mean_std(stats.loc[r, f"{metric}_mean"], stats.loc[r, f"{metric}_std"])
                                   for r in rows]
        if paper is not None and paper_column is not None:
            table[f"paper {paper_column}"] = list(paper[paper_column])
    return table


@dataclass(frozen=True)
class Verdict:
    """Row ``b`` minus row ``a`` in ours (mean over seeds, with the standard error of that
    difference from the seed spread) and in the paper, and what that says."""

    metric: str
    ours: float
    standard_error: float
    paper: float | None
    outcome: str

    def sentence(self, a: str, b: str) -> str:
        paper = "" if self.paper is None else f"paper {self.paper:+.2f}, "
        return (f"{b} vs {a} ({self.metric}): {paper}ours {self.ours:+.2f} "
                f"(± {self.standard_error:.2f} s.e. over seeds): {self.outcome}.")


def verdict(runs: pd.DataFrame, a: str, b: str, metric: str, paper_a: float | None = None,
            paper_b: float | None = None, row_key: str = "variant") -> Verdict:
    """Does ``b`` beat ``a`` on ``metric`` the way the paper says? "holds" when our difference has
    the paper's sign and exceeds two standard errors; "same direction, within seed noise" or
    "opposite direction, within seed noise" when it does not exceed them; "reversed" when the
    opposite sign exceeds them. Without paper numbers the expected sign is positive (``b`` > ``a``)."""
    values = {key: runs.loc[runs[row_key] == key, metric].astype(float) for key in (a, b)}
    for key, v in values.items():
        if v.empty or v.isna().all():
            raise ValueError(f"no {metric} values for {key!r}")
    diff = values[b].mean() - values[a].mean()
    se = math.sqrt(sum((v.std(ddof=1) if len(v) > 1 else 0.0) ** 2 / len(v) for v in values.values()))
    paper = None if paper_a is None or paper_b is None else paper_b - paper_a
    expected = 1.0 if paper is None or paper >= 0 else -1.0
    signed = diff * expected
    if signed > 2 * se:
        outcome = "the paper's direction holds"
    elif signed >= 0:
        outcome = "same direction as the paper, within seed noise"
    elif signed >= -2 * se:
        outcome = "opposite direction, within seed noise"
    else:
        outcome = "reversed: the paper's direction does not hold"
    return Verdict(metric, float(diff), float(se), paper, outcome)


def occlusion_bin_table(runs: pd.DataFrame, rows: Sequence[str], labels: Sequence[str], split: str,
                        row_key: str = "variant") -> pd.DataFrame:
    """AP per occlusion-ratio bin (columns ``{split}_AP_occ_{lo}_{hi}``), mean ± std, one row per head."""
    prefix = f"{split}_AP_occ_"
    metrics = [c for c in runs.columns if c.startswith(prefix)]
    if not metrics:
        raise KeyError(f"no {prefix}* columns: run the ablation with occlusion bins")
    table = side_by_side(runs, rows, labels, None, {m: None for m in metrics}, row_key)
    return table.rename(columns={f"ours {m}": f"occlusion {m[len(prefix):].replace('_', '-')}" for m in metrics})
