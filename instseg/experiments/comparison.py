"""Our rows beside the paper's, and a paired verdict per comparison.

Why paired: at CPU scale an effect is often about the size of the seed spread (DESIGN), so two
rows are compared where everything else is equal — the same seeds (same ROI order and cache
draw) and the same detections — and the difference is taken seed by seed and, where per-instance
mask IoU is at hand, instance by instance. Why a correction: a notebook makes dozens of
comparisons; at α = 0.05 one in twenty would "hold" by chance, so each table's comparisons form a
family whose p-values are Holm-adjusted before any verdict is read off.

Verdicts are one of three words: ``holds`` (significant, in the paper's direction), ``reversed``
(significant, against it) and ``no difference`` (anything else, including an exact tie).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats as sps

from instseg.experiments.stats import summarize

# Our metric -> the paper's column, for the COCO / COCO-OCC tables of chapter 3.
OCCLUSION_COLUMNS = {"val_occ_AP": "coco_occ_ap", "val_occ_AP50": "coco_occ_ap50",
                     "val_AP": "coco_ap", "val_AP50": "coco_ap50"}
ALPHA = 0.05
HOLDS, REVERSED, NO_DIFFERENCE = "holds", "reversed", "no difference"


def mean_std(mean: float, std: float) -> str:
    """``"31.20 ± 0.45"``; the std is left out when undefined (one seed), the cell is "-" when the
    metric is (e.g. no instance of that size)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if std is None or math.isnan(std):
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {std:.2f}"


def side_by_side(runs: pd.DataFrame, rows: Sequence[str], labels: Sequence[str],
                 paper: Mapping[str, pd.Series | None] | None, columns: Mapping[str, str | None],
                 row_key: str = "variant") -> pd.DataFrame:
    """One row per entry of ``rows`` (values of ``runs[row_key]``, in that order), labelled by
    ``labels``: for each of our metrics ``ours <metric>`` as mean ± std over the seeds, and beside
    it ``paper <column>`` from the paper row that ``paper`` maps *our row name* to (rows are
    paired by name, never by position; a row the paper lacks maps to None or is absent).
    ``columns`` maps our metric to the paper's column (None: the paper has no counterpart)."""
    if len(rows) != len(labels):
        raise ValueError(f"{len(rows)} rows but {len(labels)} labels")
    missing = [r for r in rows if r not in set(runs[row_key])]
    if missing:
        raise KeyError(f"no runs for {missing}")
    unknown = sorted(set(paper or {}) - set(rows))
    if unknown:
        raise KeyError(f"paper rows given for {unknown}, which are not rows of this table")
    stats = summarize(runs[runs[row_key].isin(rows)], row_key, list(columns))
    table = pd.DataFrame({"row": list(labels), "seeds": [int(stats.loc[r, "n"]) for r in rows]})
    for metric, paper_column in columns.items():
        table[f"ours {metric}"] = [mean_std(stats.loc[r, f"{metric}_mean"], stats.loc[r, f"{metric}_std"])
                                   for r in rows]
        if paper is not None and paper_column is not None:
            table[f"paper {paper_column}"] = [None if paper.get(r) is None else paper[r][paper_column] for r in rows]
    return table


def paired_seed_differences(runs: pd.DataFrame, a: str, b: str, metric: str,
                            row_key: str = "variant") -> pd.Series:
    """``b - a`` on ``metric`` for each seed both rows ran, indexed by seed. Both rows must have
    run the same seeds: an unpaired seed would make the difference a comparison of seeds."""
    values = {}
    for key in (a, b):
        sub = runs.loc[runs[row_key] == key, ["seed", metric]]
        if sub.empty or sub[metric].isna().all():
            raise ValueError(f"no {metric} values for {key!r}")
        if sub["seed"].duplicated().any():
            raise ValueError(f"{key!r} has more than one {metric} value for a seed")
        values[key] = sub.set_index("seed")[metric].astype(float)
    if set(values[a].index) != set(values[b].index):
        raise ValueError(f"{a!r} ran seeds {sorted(values[a].index)} but {b!r} ran {sorted(values[b].index)}: "
                         "a paired comparison needs the same seeds")
    seeds = sorted(values[a].index)
    return (values[b].loc[seeds] - values[a].loc[seeds]).rename(f"{metric} {b} - {a}")


@dataclass(frozen=True)
class InstanceDifference:
    """Per-instance mask IoU, ``b - a``, over instances x paired seeds.

    ``standard_error`` combines the two sources a rerun would vary: the instances (bootstrap of
    the seed-averaged differences) and the seeds (spread of the per-seed means), in quadrature.
    """

    mean: float
    standard_error: float
    low: float
    high: float
    instances: int
    seeds: int

    @property
    def p_value(self) -> float:
        """Two-sided normal p-value of the mean difference (1.0 for an exact tie)."""
        if self.mean == 0.0:
            return 1.0
        if self.standard_error == 0.0:
            return 0.0
        return float(2 * sps.norm.sf(abs(self.mean) / self.standard_error))


def instance_difference(ious_a: pd.DataFrame, ious_b: pd.DataFrame, n: int = 2000,
                        seed: int = 0) -> InstanceDifference:
    """``ious_*``: mask IoU per ground-truth instance (index) and seed (columns), as
    :func:`instseg.experiments.stats.instance_ious` returns; both over the same instances and
    seeds. The interval is the mean ± 1.96 combined standard errors."""
    if not ious_a.index.equals(ious_b.index) or set(ious_a.columns) != set(ious_b.columns):
        raise ValueError("the two IoU tables are not over the same instances and seeds")
    if ious_a.empty:
        raise ValueError("no instances to compare")
    diff = ious_b[list(ious_a.columns)].to_numpy(float) - ious_a.to_numpy(float)  # [instance, seed]
    per_instance, per_seed = diff.mean(axis=1), diff.mean(axis=0)
    rng = np.random.default_rng(seed)
    boot = per_instance[rng.integers(0, per_instance.size, (n, per_instance.size))].mean(axis=1)
    se_instances = float(boot.std(ddof=1))
    se_seeds = float(per_seed.std(ddof=1) / math.sqrt(per_seed.size)) if per_seed.size > 1 else 0.0
    se = math.hypot(se_instances, se_seeds)
    mean = float(diff.mean())
    return InstanceDifference(mean, se, mean - 1.96 * se, mean + 1.96 * se, diff.shape[0], diff.shape[1])


@dataclass(frozen=True)
class Verdict:
    """Row ``b`` minus row ``a``: ours (the mean paired per-seed difference, its 95% t interval),
    the per-unit difference where given (mask IoU per instance, or a metric per video or sample), the
    paper's difference, the test's p-value and,
    after :func:`holm`, the adjusted p-value, the family size and the outcome."""

    a: str
    b: str
    metric: str
    ours: float
    seed_low: float
    seed_high: float
    seeds: int
    standard_error: float  # of the mean paired per-seed difference (NaN with one seed)
    paper: float | None
    p_value: float
    test: str  # "instances x seeds" (IoU) or "seeds" (paired t on the metric)
    instances: InstanceDifference | None = None
    p_adjusted: float = float("nan")
    family: int = 0
    outcome: str = ""

    def sentence(self, label_a: str, label_b: str) -> str:
        paper = "paper n/a" if self.paper is None else f"paper {self.paper:+.2f}"
        seeds = (f"95% CI over {self.seeds} paired seeds {self.seed_low:+.2f} … {self.seed_high:+.2f}"
                 if self.seeds > 1 else "one seed")
        text = f"{label_b} − {label_a} ({self.metric}): ours {self.ours:+.2f} ({seeds}), {paper}"
        if self.instances is not None:
            i = self.instances
            text += (f"; paired over {i.instances} units × {i.seeds} seeds {i.mean:+.4f} "
                     f"({i.low:+.4f} … {i.high:+.4f})")
        adjusted = f"Holm-adjusted p {self.p_adjusted:.3g} in a family of {self.family}" if self.family else \
            f"p {self.p_value:.3g}, uncorrected"
        return f"{text}; {adjusted} → **{self.outcome or 'not yet judged'}**."


def _t95(n: int) -> float:
    return float(sps.t.ppf(0.975, n - 1))


def compare(runs: pd.DataFrame, a: str, b: str, metric: str, paper: float | None = None,
            ious: Mapping[str, pd.DataFrame] | None = None, row_key: str = "variant") -> Verdict:
    """An unjudged :class:`Verdict` of ``b`` vs ``a`` (judge a family with :func:`holm`).

    ``paper``: the paper's ``b - a`` (None: the expected direction is ``b > a``). ``ious``, when
    it has both rows, supplies the per-instance IoU tables, and the test is then the instance x
    seed difference of IoU (far more power than three seeds alone); otherwise a paired t-test
    over the seeds of ``metric``."""
    diffs = paired_seed_differences(runs, a, b, metric, row_key)
    n = len(diffs)
    mean = float(diffs.mean())
    se = float(diffs.std(ddof=1)) / math.sqrt(n) if n > 1 else float("nan")
    low, high = (mean - _t95(n) * se, mean + _t95(n) * se) if n > 1 else (float("nan"), float("nan"))
    if ious is not None and a in ious and b in ious:
        inst = instance_difference(ious[a], ious[b])
        return Verdict(a, b, metric, mean, low, high, n, se, paper, inst.p_value, "instances x seeds", inst)
    if n < 2 or (diffs == 0).all():
        p = 1.0
    elif float(diffs.std(ddof=1)) == 0.0:
        p = 0.0
    else:
        p = float(sps.ttest_1samp(diffs.to_numpy(), 0.0).pvalue)
    return Verdict(a, b, metric, mean, low, high, n, se, paper, p, "seeds")


def _outcome(v: Verdict, p_adjusted: float, alpha: float) -> str:
    if v.ours == 0.0 or not p_adjusted < alpha:
        return NO_DIFFERENCE
    if v.instances is not None and v.instances.mean * v.ours <= 0:
        return NO_DIFFERENCE
    expected = -1.0 if v.paper is not None and v.paper < 0 else 1.0
    return HOLDS if v.ours * expected > 0 else REVERSED


def holm(verdicts: Sequence[Verdict], alpha: float = ALPHA) -> list[Verdict]:
    """The family's verdicts, judged: Holm's step-down adjustment of the p-values (controls the
    chance of any false "holds"/"reversed" in the family at ``alpha``), in the given order."""
    m = len(verdicts)
    order = sorted(range(m), key=lambda i: verdicts[i].p_value)
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * verdicts[i].p_value))
        adjusted[i] = running
    return [replace(v, p_adjusted=p, family=m, outcome=_outcome(v, p, alpha)) for v, p in zip(verdicts, adjusted)]


@dataclass(frozen=True)
class Pair:
    """One comparison of a family: ``b`` vs ``a`` on ``metric``, with the paper's ``b - a``."""

    a: str
    b: str
    metric: str
    paper: float | None = None
    ious: str | None = None  # which per-instance IoU tables (e.g. the eval set's name) to use


def judge(runs: pd.DataFrame, pairs: Sequence[Pair], ious: Mapping[str, Mapping[str, pd.DataFrame]] | None = None,
          alpha: float = ALPHA, row_key: str = "variant") -> list[Verdict]:
    """Compare every pair and judge them as one Holm family. ``ious[set][row]`` is the IoU table
    of ``row`` on eval set ``set`` (a pair without ``ious`` is tested on its seeds)."""
    found = [compare(runs, p.a, p.b, p.metric, p.paper, (ious or {}).get(p.ious) if p.ious else None, row_key)
             for p in pairs]
    return holm(found, alpha)


def verdict_rows(verdicts: Sequence[Verdict], table: str) -> pd.DataFrame:
    """Tidy rows (one per verdict) for a report table and ``metrics.json``."""
    return pd.DataFrame([{
        "table": table, "a": v.a, "b": v.b, "metric": v.metric, "ours": v.ours, "seed_low": v.seed_low,
        "seed_high": v.seed_high, "seeds": v.seeds, "paper": v.paper, "test": v.test,
        "iou_diff": None if v.instances is None else v.instances.mean,
        "iou_low": None if v.instances is None else v.instances.low,
        "iou_high": None if v.instances is None else v.instances.high,
        "p": v.p_value, "p_holm": v.p_adjusted, "family": v.family, "outcome": v.outcome} for v in verdicts])


class VerdictLog:
    """Every judged family of a notebook, in the order judged: one record feeds the tidy verdict
    table, the multiplicity note and the computed conclusion."""

    def __init__(self) -> None:
        self._families: dict[str, list[Verdict]] = {}

    def add(self, family: str, verdicts: Sequence[Verdict]) -> list[Verdict]:
        """Record ``verdicts`` (one judged family, or more of it) under ``family``; returns them."""
        self._families.setdefault(family, []).extend(verdicts)
        return list(verdicts)

    def items(self) -> list[tuple[str, Verdict]]:
        return [(family, v) for family, found in self._families.items() for v in found]

    @property
    def sizes(self) -> dict[str, int]:
        return {family: len(found) for family, found in self._families.items()}

    def table(self) -> pd.DataFrame:
        return pd.concat([verdict_rows(found, family) for family, found in self._families.items()], ignore_index=True)


def multiplicity_note(families: Mapping[str, int], alpha: float = ALPHA) -> str:
    """What the notebook's correction controls, in one sentence."""
    total = sum(families.values())
    return (f"This notebook makes {total} comparisons in {len(families)} families "
            f"({', '.join(f'{k}: {v}' for k, v in families.items())}). Within each family p-values are "
            f"Holm-adjusted at α = {alpha}, so each family has at most a {alpha:.0%} chance of any false "
            f"verdict; uncorrected, about {total * alpha:.1f} of {total} true nulls would have read as effects.")


def occlusion_bin_table(runs: pd.DataFrame, rows: Sequence[str], labels: Sequence[str], split: str,
                        row_key: str = "variant") -> pd.DataFrame:
    """AP per occlusion-ratio bin (columns ``{split}_AP_occ_{lo}_{hi}``), mean ± std, one row per head."""
    prefix = f"{split}_AP_occ_"
    metrics = [c for c in runs.columns if c.startswith(prefix)]
    if not metrics:
        raise KeyError(f"no {prefix}* columns: run the ablation with occlusion bins")
    table = side_by_side(runs, rows, labels, None, {m: None for m in metrics}, row_key)
    return table.rename(columns={f"ours {m}": f"occlusion {m[len(prefix):].replace('_', '-')}" for m in metrics})
