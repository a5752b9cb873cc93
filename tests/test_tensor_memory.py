"""The tensor-memory mode: new tensors count while they live, views and inputs do not, and the
explicit non-local attention's peak holds its queries x memory matrix, on meta tensors too."""

from __future__ import annotations

import torch

from instseg.video.layers.attention import nonlocal_attention
from instseg.video.layers.prototypes import prototypical_attention
from instseg.video.tensor_memory import PeakTensorMemory


def test_counts_new_tensors_while_they_live_and_not_views_or_inputs() -> None:
    given = torch.ones(10_000)
    with PeakTensorMemory() as memory:
        a = torch.zeros(1000)  # 4,000 bytes
        view = a.view(10, 100)
        b = torch.zeros(500, dtype=torch.float64)  # 4,000 bytes
        assert memory.live == 8000
        del a, view
        c = given * 2  # 40,000 bytes
        assert memory.live == 44_000
        del b, c
    assert memory.peak == 44_000 and memory.live == 0


def test_non_local_peak_holds_the_attention_matrix_and_prototypes_do_not_on_meta() -> None:
    q, k = torch.randn(1, 3000, 16, device="meta"), torch.randn(1, 4000, 16, device="meta")
    with PeakTensorMemory() as explicit:
        nonlocal_attention(q, k, k)
    assert explicit.peak >= 3000 * 4000 * 4
    g = torch.Generator().manual_seed(0)
    qc, kc = torch.randn(1, 3000, 16, generator=g), torch.randn(1, 4000, 16, generator=g)
    with PeakTensorMemory() as prototypes:
        prototypical_attention(qc, kc, kc, num=8, iters=2, temperature=16.0)
    assert prototypes.peak < 3000 * 4000 * 4 / 10
