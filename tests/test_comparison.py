"""Side-by-side tables and direction verdicts on hand-made runs."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from instseg.experiments.comparison import mean_std, occlusion_bin_table, side_by_side, verdict


def _runs(a: list[float], b: list[float]) -> pd.DataFrame:
    rows = [{"variant": "a", "seed": s, "val_AP": v, "val_AP_occ_0_0.1": v + 1} for s, v in enumerate(a)]
    rows += [{"variant": "b", "seed": s, "val_AP": v, "val_AP_occ_0_0.1": v + 2} for s, v in enumerate(b)]
    return pd.DataFrame(rows)


def test_mean_std_formats() -> None:
    assert mean_std(31.2, 0.449) == "31.20 ± 0.45"
    assert mean_std(31.2, float("nan")) == "31.20"
    assert mean_std(float("nan"), 1.0) == "-"


def test_side_by_side_keeps_order_and_puts_paper_beside() -> None:
    runs = _runs([10, 12, 14], [20, 20, 20])
    paper = pd.DataFrame({"coco_ap": [33.0, 34.0]})
    table = side_by_side(runs, ["b", "a"], ["B", "A"], paper.iloc[::-1].reset_index(drop=True), {"val_AP": "coco_ap"})
    assert list(table["row"]) == ["B", "A"]
    assert list(table["ours val_AP"]) == ["20.00 ± 0.00", "12.00 ± 2.00"]
    assert list(table["paper coco_ap"]) == [34.0, 33.0]
    assert list(table["seeds"]) == [3, 3]
    with pytest.raises(ValueError, match="rows"):
        side_by_side(runs, ["a"], ["A"], paper, {"val_AP": "coco_ap"})
    with pytest.raises(KeyError, match="c"):
        side_by_side(runs, ["c"], ["C"], None, {"val_AP": None})


def test_verdict_weighs_the_difference_against_seed_noise() -> None:
    # a: mean 12, std 2; b: mean 20, std 0 -> diff 8, se = sqrt(4/3) = 1.155
    v = verdict(_runs([10, 12, 14], [20, 20, 20]), "a", "b", "val_AP", paper_a=30.0, paper_b=31.0)
    assert v.ours == pytest.approx(8.0) and v.standard_error == pytest.approx(math.sqrt(4 / 3))
    assert v.paper == pytest.approx(1.0) and v.outcome == "the paper's direction holds"
    assert "paper +1.00, ours +8.00" in v.sentence("A", "B")
    assert verdict(_runs([10, 12, 14], [13, 13, 13]), "a", "b", "val_AP", 30, 31).outcome.startswith("same direction")
    assert verdict(_runs([10, 12, 14], [11, 11, 11]), "a", "b", "val_AP", 30, 31).outcome.startswith("opposite")
    assert verdict(_runs([10, 12, 14], [2, 2, 2]), "a", "b", "val_AP", 30, 31).outcome.startswith("reversed")
    # the paper says b is lower: a drop in ours is the paper's direction
    assert verdict(_runs([10, 12, 14], [2, 2, 2]), "a", "b", "val_AP", 31, 30).outcome == "the paper's direction holds"
    with pytest.raises(ValueError, match="no val_AP"):
        verdict(_runs([10], [2]), "a", "zzz", "val_AP")


def test_occlusion_bin_table_columns() -> None:
    table = occlusion_bin_table(_runs([10, 12, 14], [20, 20, 20]), ["a", "b"], ["A", "B"], "val")
    assert list(table.columns) == ["row", "seeds", "occlusion 0-0.1"]
    assert list(table["occlusion 0-0.1"]) == ["13.00 ± 2.00", "22.00 ± 0.00"]
    with pytest.raises(KeyError):
        occlusion_bin_table(_runs([1], [2]), ["a"], ["A"], "test")
