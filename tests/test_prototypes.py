"""PCAN's prototypical attention (eqs. 5.2-5.5) and the attention baselines: EM against a hand
case and a direct numpy EM, masked EM, the readout against the explicit formula, gradients, no
queries x memory tensor, and the fused baselines against the explicit ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instseg.video.layers.attention import MultiHeadAttention, nonlocal_attention
from instseg.video.layers.prototypes import (
    assign, em_prototypes, prototype_readout, prototypical_attention, squared_distances, value_prototypes,
)


def test_em_separates_two_hand_made_clusters() -> None:
    keys = torch.tensor([[[0.0], [0.2], [10.0], [10.4]]], dtype=torch.float64)
    mu, resp = em_prototypes(keys, num=2, iters=3, temperature=1.0)
    torch.testing.assert_close(mu, torch.tensor([[[0.1], [10.2]]], dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(resp.sum(-1), torch.ones(1, 4, dtype=torch.float64))
    assert resp[0, :2, 0].min() > 0.999 and resp[0, 2:, 1].min() > 0.999


def _numpy_em(x: np.ndarray, mu: np.ndarray, iters: int, temperature: float) -> np.ndarray:
    """Textbook EM of an isotropic mixture with fixed variance and uniform priors, by loops."""
    for _ in range(iters):
        logits = np.array([[-np.sum((xi - mj) ** 2) / temperature for mj in mu] for xi in x])
        r = np.exp(logits - logits.max(1, keepdims=True))
        r /= r.sum(1, keepdims=True)
        mu = np.array([(r[:, j:j + 1] * x).sum(0) / r[:, j].sum() for j in range(len(mu))])
    return mu


@pytest.mark.parametrize("seed", range(5))
def test_em_equals_a_direct_numpy_em(seed: int) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (3, 4))
    x = np.concatenate([c + rng.normal(0, 0.7, (30, 4)) for c in centres])
    init = x[[0, 35, 70]] + 0.5
    got, _ = em_prototypes(torch.from_numpy(x)[None], 3, iters=6, temperature=2.0,
                           init=torch.from_numpy(init)[None])
    np.testing.assert_allclose(got[0].numpy(), _numpy_em(x, init, 6, 2.0), atol=1e-10)


def test_masked_em_ignores_masked_out_positions() -> None:
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(2, 40, 5, generator=g, dtype=torch.float64)
    mask = torch.rand(2, 40, generator=g) > 0.4
    mu, resp = em_prototypes(keys, 4, 5, 1.5, mask)
    scrambled = torch.where(mask[..., None], keys, 100 * torch.randn(2, 40, 5, generator=g, dtype=torch.float64))
    mu2, _ = em_prototypes(scrambled, 4, 5, 1.5, mask)
    torch.testing.assert_close(mu, mu2)
    assert (resp[~mask] == 0).all()
    for b in range(2):  # the same as EM on the kept positions alone
        alone, _ = em_prototypes(keys[b:b + 1, mask[b]], 4, 5, 1.5)
        torch.testing.assert_close(mu[b:b + 1], alone)


def test_readout_equals_the_explicit_formula_and_assignments_sum_to_one() -> None:
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, n, c, generator=g, dtype=torch.float64) for n, c in ((7, 3), (4, 3), (4, 6)))
    got = prototype_readout(q, k, v, temperature=0.8)
    want = torch.zeros(1, 7, 6, dtype=torch.float64)
    for i in range(7):
        w = torch.stack([torch.exp(-((q[0, i] - k[0, j]) ** 2).sum() / 0.8) for j in range(4)])
        want[0, i] = (w[:, None] * v[0]).sum(0) / w.sum()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(assign(q, k, 0.8).sum(-1), torch.ones(1, 7, dtype=torch.float64))
    torch.testing.assert_close(squared_distances(q, k), torch.cdist(q, k) ** 2)


def test_value_prototypes_are_responsibility_weighted_means() -> None:
    resp = torch.tensor([[[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]])
    values = torch.tensor([[[2.0], [4.0], [8.0]]])
    torch.testing.assert_close(value_prototypes(resp, values), torch.tensor([[[(2 + 2) / 1.5], [(2 + 8) / 1.5]]]))


def test_gradients_reach_queries_keys_and_values() -> None:
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, n, c, generator=g, dtype=torch.float64, requires_grad=True)
               for n, c in ((5, 3), (12, 3), (12, 2)))
    assert torch.autograd.gradcheck(lambda q, k, v: prototypical_attention(q, k, v, 3, 2, 1.0), (q, k, v))


def test_no_queries_by_memory_tensor_is_built() -> None:
    """200k queries x 200k memory positions would be 160 GB as one float32 matrix."""
    g = torch.Generator().manual_seed(3)
    keys = torch.randn(1, 200_000, 8, generator=g)
    out = prototypical_attention(keys, keys, keys[..., :4], num=4, iters=2, temperature=2.0)
    assert out.shape == (1, 200_000, 4) and torch.isfinite(out).all()


@pytest.mark.parametrize("masked", [False, True])
def test_fused_baselines_equal_the_explicit_ones(masked: bool) -> None:
    g = torch.Generator().manual_seed(4)
    q, k, v = torch.randn(2, 9, 16, generator=g), torch.randn(2, 30, 16, generator=g), torch.randn(2, 30, 16, generator=g)
    mask = (torch.rand(2, 30, generator=g) > 0.3) if masked else None
    torch.testing.assert_close(nonlocal_attention(q, k, v, mask, fused=True), nonlocal_attention(q, k, v, mask),
                               atol=1e-5, rtol=1e-5)
    torch.manual_seed(0)
    explicit = MultiHeadAttention(16, heads=4)
    fused = MultiHeadAttention(16, heads=4, fused=True)
    fused.load_state_dict(explicit.state_dict())
    torch.testing.assert_close(fused(q, k, mask), explicit(q, k, mask), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="heads"):
        MultiHeadAttention(10, heads=4)


def test_truncated_em_has_the_same_values_and_gradient_only_through_its_last_iterations() -> None:
    torch.manual_seed(0)
    keys = torch.randn(2, 30, 4, requires_grad=True)
    init = torch.randn(2, 3, 4, requires_grad=True)
    full, full_resp = em_prototypes(keys, 3, 4, 0.5, init=init)
    cut, cut_resp = em_prototypes(keys, 3, 4, 0.5, init=init, grad_iters=1)
    assert torch.allclose(full, cut, atol=1e-6) and torch.allclose(full_resp, cut_resp, atol=1e-6)
    g_full = torch.autograd.grad(full.sum(), (keys, init), allow_unused=True)
    g_cut = torch.autograd.grad(cut.sum(), (keys, init), allow_unused=True)
    assert g_cut[0] is not None and g_cut[0].abs().sum() > 0  # the keys still train
    assert g_cut[1] is None  # the start is reached only through the iterations that were cut
    assert g_full[1] is not None and not torch.allclose(g_full[0], g_cut[0])
    every, _ = em_prototypes(keys, 3, 4, 0.5, init=init, grad_iters=4)  # as many as there are: the full graph
    assert torch.allclose(torch.autograd.grad(every.sum(), keys)[0], g_full[0])
