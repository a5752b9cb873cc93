"""The efficiency study's measurements: FLOPs match the hand count, grow as the methods' costs
should, the prototypical path never builds a queries x memory tensor, and ``measure``'s table."""

from __future__ import annotations

import math

import pytest
import torch

from instseg.video import efficiency as E


def _flops(method: str, hw: int, channels: int, length: int, k: int = 4) -> int:
    return E.count_flops(E.methods(channels, 2, "meta")[method], (E.make_inputs(hw, channels, length, k, "meta"),))


def test_explicit_non_local_flops_are_the_hand_count() -> None:
    q, c, t = 48, 8, 3
    m = q * t
    assert _flops("non-local (explicit)", q, c, t) == 2 * q * m * c + 2 * q * m * c


def test_prototypical_flops_grow_linearly_in_the_memory_length() -> None:
    costs = [_flops("prototypical", 64, 8, t) for t in (1, 2, 3, 5)]
    assert costs[0] > 0
    assert costs == [t * costs[0] for t in (1, 2, 3, 5)]


def test_explicit_non_local_memory_grows_with_queries_times_memory() -> None:
    def peak(hw: int, length: int) -> int:
        fn = E.methods(8, 2, "meta")["non-local (explicit)"]
        return E.peak_bytes(fn, (E.make_inputs(hw, 8, length, 2, "meta"),))

    small, longer, wider = peak(500, 1), peak(500, 4), peak(1000, 2)
    assert small >= 500 * 500 * 4  # the float32 [Q, M] matrix
    assert longer / small == pytest.approx(500 * 2000 / (500 * 500), rel=0.05)  # Q x M: 4 x the memory
    assert wider / small == pytest.approx(1000 * 2000 / (500 * 500), rel=0.05)  # 2 x Q, 4 x M


def test_prototypical_never_allocates_a_queries_by_memory_tensor() -> None:
    hw, channels, length = 4000, 8, 2
    fn = E.methods(channels, 3, "meta")["prototypical"]
    peak = E.peak_bytes(fn, (E.make_inputs(hw, channels, length, 8, "meta"),))
    assert peak < hw * hw * 4 / 20  # the [Q, M] matrix of one memory frame would be 64 MB


def test_measure_returns_one_row_per_length_and_method_on_meta() -> None:
    df = E.measure([1, 2], [16, 4], 8, [4, 1], 1, key_channels=4)
    assert list(zip(df["T"], df.method)) == [(t, m) for t in (1, 2) for m in E.METHODS]
    for column in ("GFLOPs", "GMACs", "peak_MB", "memory_source", "time_ms", "flops_vs_nonlocal",
                   "memory_vs_nonlocal", "time_vs_nonlocal", "positions", "inputs_MB"):
        assert column in df.columns
    assert (df.GMACs * 2 == df.GFLOPs).all() and (df.positions == 20).all()
    assert (df[df.method == E.BASELINE].flops_vs_nonlocal == 1).all()
    assert set(df.memory_source) == {"PeakTensorMemory (meta)"} and df.time_ms.isna().all()


def test_measure_times_on_cpu_and_refuses_timing_on_meta() -> None:
    torch.set_num_threads(1)
    df = E.measure([1], 16, 8, 2, 1, device="cpu", repeat=1, time_it=True)
    assert (df.time_ms > 0).all() and math.isclose(df[df.method == E.BASELINE].time_vs_nonlocal.iloc[0], 1)
    with pytest.raises(ValueError):
        E.measure([1], 16, 8, 2, 1, device="meta", time_it=True)


def test_implied_positions_inverts_a_quadratic_cost() -> None:
    def cost(hw: int) -> int:
        return 3 * hw * hw + 5 * hw + 7

    assert E.implied_positions(cost, cost(5000), step=100) == pytest.approx(5000)
    assert E.implied_positions(lambda hw: 4 * hw, 4 * 1234) == pytest.approx(1234)
