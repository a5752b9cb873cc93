"""Prototypical cross-attention (PCAN, eqs. 5.2-5.5): a memory's keys clustered by an isotropic
Gaussian mixture fitted with EM, value prototypes pooled by the same soft assignments, and a query
that reads the value prototypes weighted by its own assignment to the key prototypes.

Why it is cheap: the query attends to ``num`` prototypes instead of every memory position, and the
distances are expanded as ``|a|^2 + |b|^2 - 2 a.b``, so nothing of size queries x memory is ever
built (the non-local baseline's cost).

Conventions, tensors batch-first: keys [B, M, C], values [B, M, Cv], queries [B, Q, C], a memory
``mask`` [B, M] (True: the position takes part, e.g. a tracklet's foreground), prototypes
[B, K, C]. ``temperature`` is eq. 5.3's 2 sigma^2 (constant variance, uniform priors). Eq. 5.4 is
printed as a sum over the memory; we take it as the responsibility-weighted mean, the M-step's own
form (a sum would scale the values with the memory's size).
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-6


def squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """[B, P, R] squared Euclidean distances of [B, P, C] and [B, R, C], without a [B, P, R, C] tensor."""
    return (a.pow(2).sum(-1, keepdim=True) + b.pow(2).sum(-1).unsqueeze(1) - 2 * a @ b.transpose(1, 2)).clamp(min=0)


def assign(points: Tensor, prototypes: Tensor, temperature: float) -> Tensor:
    """Eq. 5.3: p(z = j | point), a softmax over prototypes of -|point - prototype_j|^2 / temperature,
    [B, P, K]. Computed as [B, K, P] and returned transposed (a view): PyTorch's CPU softmax over a
    short last dimension (K = 10) was 7x slower than over the same numbers laid out along dim 1."""
    return torch.softmax(-squared_distances(prototypes, points) / temperature, dim=1).transpose(1, 2)


def _initial_prototypes(keys: Tensor, num: int, mask: Tensor) -> Tensor:
    """``num`` keys evenly spaced over each item's masked positions (deterministic; an item with
    fewer positions repeats them; one with none starts from zeros)."""
    out = keys.new_zeros(keys.shape[0], num, keys.shape[-1])
    for b in range(keys.shape[0]):
        idx = torch.nonzero(mask[b]).flatten()
        if len(idx):
            picks = torch.linspace(0, len(idx) - 1, num, device=keys.device).round().long()
            out[b] = keys[b, idx[picks]]
    return out


def em_prototypes(keys: Tensor, num: int, iters: int, temperature: float, mask: Tensor | None = None,
                  init: Tensor | None = None, grad_iters: int | None = None) -> tuple[Tensor, Tensor]:
    """Eq. 5.2 fitted by EM: (prototypes [B, num, C], responsibilities [B, M, num]). Masked-out
    positions get responsibility 0 and move no prototype; a prototype that no position claims
    keeps its previous value. ``init``: starting prototypes (default: evenly spaced keys).

    ``grad_iters``: only the last ``grad_iters`` iterations (and the E-step after them) are
    differentiated, the earlier ones run without autograd (EMANet's truncated back-propagation):
    the same values, a backward pass that does not grow with ``iters``. None: every iteration."""
    mask = torch.ones(keys.shape[:2], dtype=torch.bool, device=keys.device) if mask is None else mask.bool()
    weight = mask.to(keys.dtype).unsqueeze(-1)
    free = iters if grad_iters is None else min(iters, max(grad_iters, 0))
    with torch.set_grad_enabled(torch.is_grad_enabled() and free == iters):
        mu = _initial_prototypes(keys, num, mask) if init is None else init
        resp = assign(keys, mu, temperature) * weight
        for _ in range(iters - free):
            mu, resp = _em_step(keys, mu, resp, weight, temperature)
    if free < iters:  # re-enter the graph at the last E-step
        resp = assign(keys, mu, temperature) * weight
    for _ in range(free):
        mu, resp = _em_step(keys, mu, resp, weight, temperature)
    return mu, resp


def _em_step(keys: Tensor, mu: Tensor, resp: Tensor, weight: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """One M-step (responsibility-weighted means; unclaimed prototypes stay) and the E-step after it."""
    mass = resp.sum(1).unsqueeze(-1)  # [B, num, 1]
    mu = torch.where(mass > EPS, resp.transpose(1, 2) @ keys / mass.clamp(min=EPS), mu)
    return mu, assign(keys, mu, temperature) * weight


def value_prototypes(resp: Tensor, values: Tensor) -> Tensor:
    """Eq. 5.4 as a weighted mean: [B, num, Cv] values pooled by the responsibilities [B, M, num]."""
    return resp.transpose(1, 2) @ values / resp.sum(1).unsqueeze(-1).clamp(min=EPS)


def prototype_readout(queries: Tensor, key_prototypes: Tensor, value_prototypes: Tensor,
                      temperature: float) -> Tensor:
    """Eq. 5.5: each query's [B, Q, Cv] mean of the value prototypes, weighted by its assignment
    to the key prototypes."""
    return assign(queries, key_prototypes, temperature) @ value_prototypes


def prototypical_attention(queries: Tensor, keys: Tensor, values: Tensor, num: int, iters: int,
                           temperature: float, mask: Tensor | None = None) -> Tensor:
    """Cluster the memory (keys, values) into ``num`` prototypes and read them for ``queries``."""
    mu, resp = em_prototypes(keys, num, iters, temperature, mask)
    return prototype_readout(queries, mu, value_prototypes(resp, values), temperature)
