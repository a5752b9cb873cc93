"""Side-by-side tables and direction verdicts on hand-made runs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from instseg.experiments.comparison import (
    HOLDS,
    NO_DIFFERENCE,
    REVERSED,
    VerdictLog,
    Pair,
    compare,
    holm,
    instance_difference,
    judge,
    mean_std,
    multiplicity_note,
    occlusion_bin_table,
    paired_seed_differences,
    side_by_side,
    verdict_rows,
)


def _runs(a: list[float], b: list[float]) -> pd.DataFrame:
    rows = [{"variant": "a", "seed": s, "val_AP": v, "val_AP_occ_0_0.1": v + 1} for s, v in enumerate(a)]
    rows += [{"variant": "b", "seed": s, "val_AP": v, "val_AP_occ_0_0.1": v + 2} for s, v in enumerate(b)]
    return pd.DataFrame(rows)


def test_mean_std_formats() -> None:
    assert mean_std(31.2, 0.449) == "31.20 ± 0.45"
    assert mean_std(31.2, float("nan")) == "31.20"
    assert mean_std(float("nan"), 1.0) == "-"


def test_side_by_side_keeps_order_and_pairs_paper_rows_by_name() -> None:
    runs = _runs([10, 12, 14], [20, 20, 20])
    paper = {"a": pd.Series({"coco_ap": 33.0}), "b": pd.Series({"coco_ap": 34.0})}
    table = side_by_side(runs, ["b", "a"], ["B", "A"], paper, {"val_AP": "coco_ap"})
    assert list(table["row"]) == ["B", "A"]
    assert list(table["ours val_AP"]) == ["20.00 ± 0.00", "12.00 ± 2.00"]
    assert list(table["paper coco_ap"]) == [34.0, 33.0]
    assert list(table["seeds"]) == [3, 3]
    only_b = side_by_side(runs, ["a", "b"], ["A", "B"], {"b": paper["b"]}, {"val_AP": "coco_ap"})
    assert only_b["paper coco_ap"].isna().tolist() == [True, False] and only_b["paper coco_ap"][1] == 34.0
    with pytest.raises(KeyError, match="not rows"):
        side_by_side(runs, ["a"], ["A"], paper, {"val_AP": "coco_ap"})
    with pytest.raises(KeyError, match="c"):
        side_by_side(runs, ["c"], ["C"], None, {"val_AP": None})


def test_paired_seed_differences_pair_by_seed_and_refuse_unpaired_seeds() -> None:
    runs = _runs([10, 12, 14], [13, 12, 20]).sample(frac=1.0, random_state=0)  # row order must not matter
    assert paired_seed_differences(runs, "a", "b", "val_AP").tolist() == [3.0, 0.0, 6.0]
    with pytest.raises(ValueError, match="same seeds"):
        paired_seed_differences(pd.concat([runs, _runs([], [1, 2, 3, 4]).tail(1)]), "a", "b", "val_AP")


def test_compare_is_a_paired_t_test_over_seeds() -> None:
    # paired diffs 3, 4, 5: mean 4, sd 1, se 1/sqrt(3); t = 4 sqrt(3) = 6.93 with 2 df -> p = 0.0202
    v = compare(_runs([10, 12, 14], [13, 16, 19]), "a", "b", "val_AP", paper=1.0)
    assert v.ours == pytest.approx(4.0) and v.standard_error == pytest.approx(1 / math.sqrt(3))
    assert v.p_value == pytest.approx(0.02018, abs=1e-4) and v.test == "seeds"
    half = 4.302653 / math.sqrt(3)
    assert (v.seed_low, v.seed_high) == pytest.approx((4 - half, 4 + half), abs=1e-5)
    # unpaired, the spread of a (std 2) would swamp this difference; paired it is clear
    assert holm([v])[0].outcome == HOLDS
    assert holm([compare(_runs([10, 12, 14], [13, 16, 19]), "a", "b", "val_AP", paper=-1.0)])[0].outcome == REVERSED


def test_a_tie_is_no_difference_never_a_direction() -> None:
    tie = compare(_runs([41.3, 41.3, 41.3], [41.3, 41.3, 41.3]), "a", "b", "val_AP", paper=-1.19)
    assert tie.ours == 0.0 and tie.p_value == 1.0
    assert holm([tie])[0].outcome == NO_DIFFERENCE
    noisy = compare(_runs([10, 12, 14], [11, 11, 16]), "a", "b", "val_AP", paper=1.0)
    assert holm([noisy])[0].outcome == NO_DIFFERENCE


def test_holm_adjusts_step_down_and_keeps_order() -> None:
    runs = pd.concat([_runs([0, 0, 0], [1, 1, 1]).assign(variant=lambda d: d["variant"] + str(k)) for k in range(3)])
    base = [compare(runs, f"a{k}", f"b{k}", "val_AP") for k in range(3)]
    from dataclasses import replace
    fake = [replace(base[0], p_value=0.01), replace(base[1], p_value=0.04), replace(base[2], p_value=0.03)]
    judged = holm(fake)
    # sorted p: 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.06, 0.04*1) = 0.06
    assert [v.p_adjusted for v in judged] == pytest.approx([0.03, 0.06, 0.06])
    assert [v.outcome for v in judged] == [HOLDS, NO_DIFFERENCE, NO_DIFFERENCE] and judged[0].family == 3


def test_instance_difference_combines_instance_and_seed_noise() -> None:
    index = pd.Index([1, 2, 3, 4], name="annotation_id")
    a = pd.DataFrame({0: [0.5, 0.6, 0.7, 0.8], 1: [0.5, 0.6, 0.7, 0.8]}, index=index)
    b = a + 0.1
    exact = instance_difference(a, b)
    assert exact.mean == pytest.approx(0.1) and exact.standard_error == pytest.approx(0.0, abs=1e-12)
    assert exact.p_value == 0.0 and (exact.instances, exact.seeds) == (4, 2)
    b2 = b.copy()
    b2[1] = a[1] + 0.3  # seed 1 gains more than seed 0: the seed spread enters the standard error
    spread = instance_difference(a, b2)
    assert spread.mean == pytest.approx(0.2) and spread.standard_error == pytest.approx(0.1, rel=1e-6)
    with pytest.raises(ValueError, match="same instances"):
        instance_difference(a, b.iloc[:3])


def test_compare_uses_instance_ious_when_given_and_sign_must_agree() -> None:
    runs = _runs([10, 12, 14], [11, 13, 15])
    index = pd.Index(range(50), name="annotation_id")
    rng = np.random.default_rng(0)
    base = pd.DataFrame({s: rng.uniform(0.3, 0.9, 50) for s in range(3)}, index=index)
    better = base + 0.05
    v = compare(runs, "a", "b", "val_AP", 1.0, {"a": base, "b": better})
    assert v.test == "instances x seeds" and v.instances.mean == pytest.approx(0.05)
    assert holm([v])[0].outcome == HOLDS
    worse = compare(runs, "a", "b", "val_AP", 1.0, {"a": base, "b": base - 0.05})
    assert holm([worse])[0].outcome == NO_DIFFERENCE  # AP up, IoU down: no verdict either way


def test_judge_and_verdict_rows() -> None:
    runs = _runs([10, 12, 14], [13, 16, 19])
    judged = judge(runs, [Pair("a", "b", "val_AP", 1.0), Pair("b", "a", "val_AP", 1.0)])
    assert [v.outcome for v in judged] == [HOLDS, REVERSED] and all(v.family == 2 for v in judged)
    rows = verdict_rows(judged, "t")
    assert list(rows["outcome"]) == [HOLDS, REVERSED] and set(rows["table"]) == {"t"}
    assert "Holm-adjusted" in judged[0].sentence("A", "B")
    assert "2 comparisons in 1 families" in multiplicity_note({"t": 2})


def test_occlusion_bin_table_columns() -> None:
    table = occlusion_bin_table(_runs([10, 12, 14], [20, 20, 20]), ["a", "b"], ["A", "B"], "val")
    assert list(table.columns) == ["row", "seeds", "occlusion 0-0.1"]
    assert list(table["occlusion 0-0.1"]) == ["13.00 ± 2.00", "22.00 ± 0.00"]
    with pytest.raises(KeyError):
        occlusion_bin_table(_runs([1], [2]), ["a"], ["A"], "test")


def test_verdict_log_keeps_families_in_order_for_the_table_and_the_note() -> None:
    runs = _runs([10, 12, 14], [13, 16, 19])
    log = VerdictLog()
    first = log.add("t1", judge(runs, [Pair("a", "b", "val_AP", 1.0)]))
    log.add("t2", judge(runs, [Pair("b", "a", "val_AP", 1.0), Pair("a", "b", "val_AP", -1.0)]))
    assert first[0].outcome == HOLDS and log.sizes == {"t1": 1, "t2": 2}
    assert [family for family, _ in log.items()] == ["t1", "t2", "t2"]
    table = log.table()
    assert list(table["table"]) == ["t1", "t2", "t2"] and list(table["outcome"]) == [HOLDS, REVERSED, REVERSED]
    assert "3 comparisons in 2 families" in multiplicity_note(log.sizes)
