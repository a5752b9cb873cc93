"""The convergence check printed under every table, on hand-made curves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from instseg.engine.plateau import plateau_check, plateau_record, plateau_summary, smooth


def test_smooth_is_a_trailing_mean() -> None:
    assert smooth([3.0, 1.0, 2.0, 6.0], 2).tolist() == [3.0, 2.0, 1.5, 4.0]


def test_a_flat_tail_passes_and_a_falling_one_fails() -> None:
    it = np.arange(1, 21) * 50  # 20 points over 1000 iterations: the tail is iterations >= 800
    flat = np.r_[np.linspace(2.0, 1.0, 12), np.full(8, 1.0)]  # flat from before the tail and its smoothing window
    check = plateau_check(it, flat)
    assert check.passed and check.improvement == pytest.approx(0.0) and check.points == 5
    falling = np.linspace(2.0, 1.0, 20)  # still dropping ~5% per point
    late = plateau_check(it, falling)
    assert not late.passed and late.improvement > 0.1
    # exactly at the tolerance fails (strictly less is required): 1% over the tail
    edge = np.r_[np.full(16, 1.0), np.full(4, 0.99)]  # the tail starts at iteration 800, at 1.0
    assert not plateau_check(it, edge, window=1).passed


def test_a_rising_tail_passes_but_is_flagged_overfitting() -> None:
    it = np.arange(1, 11) * 10
    check = plateau_check(it, [5, 4, 3, 2, 1.0, 1.0, 1.0, 1.0, 1.1, 1.2], window=1)
    assert check.passed and check.rising and check.improvement == pytest.approx(-0.2)


def test_non_finite_or_too_short_curves_fail() -> None:
    assert not plateau_check([10, 20], [1.0, math.nan]).passed
    assert not plateau_check([100], [1.0]).passed
    with pytest.raises(ValueError):
        plateau_check([1, 2], [1.0])


def test_summary_counts_failures() -> None:
    it = np.arange(1, 21)
    good = plateau_check(it, np.full(20, 1.0))
    bad = plateau_check(it, np.linspace(2, 1, 20))
    line = plateau_summary([good, bad.as_dict()])
    assert "1/2 runs pass" in line and "1 NOT converged" in line
    assert "all converged" in plateau_summary([good])


def test_a_run_that_only_flattened_after_its_decay_fails_the_phase_check() -> None:
    """The fooling case measured on an FCN head: still falling at the decay (60%), flat after it."""
    it = np.arange(1, 21) * 10  # decay at 120
    falling_then_flat = np.r_[np.linspace(2.0, 1.2, 12), np.full(8, 1.0)]
    assert plateau_check(it, falling_then_flat).passed  # the tail alone is flat
    check = plateau_check(it, falling_then_flat, phase_end=120)
    assert not check.passed and check.phase_improvement > 0.05
    converged = np.r_[np.linspace(2.0, 1.2, 6), np.full(6, 1.2), np.full(8, 1.0)]
    assert plateau_check(it, converged, phase_end=120).passed
    assert "before the decay" in plateau_summary([check])


def test_plateau_record_keeps_counts_and_the_worst_late_improvement() -> None:
    it = np.arange(1, 21)
    good, bad = plateau_check(it, np.full(20, 1.0)), plateau_check(it, np.linspace(2, 1, 20))
    record = plateau_record([good, bad.as_dict()])
    assert record["runs"] == 2 and record["passed"] == 1
    assert record["max_late_improvement"] == pytest.approx(bad.improvement)
