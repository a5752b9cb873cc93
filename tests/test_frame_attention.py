"""The frame-level prototypical attention module: eq. 5.7's weights sum to one over frames, each
memory frame's readout is eq. 5.6 on its stored prototypes, an empty memory aggregates the current
frame alone, every module is the identity at initialisation (its fusion starts at zero), and once
the fusion has moved the training gradient reaches the key and value encoders."""

from __future__ import annotations

import torch

import pytest

from instseg.video.layers.frame_attention import (FrameNonLocalAttention, FramePrototypicalAttention,
                                                  FrameTransformerAttention)
from instseg.video.layers.prototypes import prototype_readout


def _module() -> FramePrototypicalAttention:
    torch.manual_seed(0)
    return FramePrototypicalAttention(8, key_channels=4, num_prototypes=5, em_iters=2).double()


def _features(t: int, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 8, 6, 7, generator=g, dtype=torch.float64) for _ in range(t)]


def test_temporal_weights_sum_to_one_and_readouts_follow_eq_5_6() -> None:
    module = _module()
    *past, current = _features(4)
    memory = [module.memory_entry(f) for f in past]
    aggregated, weights = module.aggregate(current, memory)
    assert weights.shape == (2, 4, 42) and aggregated.shape == (2, 42, 8)
    torch.testing.assert_close(weights.sum(1), torch.ones(2, 42, dtype=torch.float64))
    keys, values = module.encode(current)
    readouts = torch.stack([prototype_readout(keys, k, v, module.temperature) for k, v in memory] + [values], 1)
    w = torch.softmax((readouts * values[:, None]).sum(-1), dim=1)
    torch.testing.assert_close(aggregated, (w[..., None] * readouts).sum(1))
    assert memory[0][0].shape == (2, 5, 4) and memory[0][1].shape == (2, 5, 8)


def test_an_empty_memory_aggregates_the_current_frame_alone() -> None:
    module = _module()
    current = _features(1)[0]
    aggregated, weights = module.aggregate(current, [])
    torch.testing.assert_close(aggregated, module.encode(current)[1])
    assert (weights == 1).all()
    assert module(current, []).shape == current.shape


@pytest.mark.parametrize("cls", [FramePrototypicalAttention, FrameNonLocalAttention, FrameTransformerAttention])
def test_every_frame_module_starts_as_the_identity(cls: type) -> None:
    torch.manual_seed(0)
    module = cls(8, 4).double()
    *past, current = _features(3, seed=3)
    out = module(current, [module.memory_entry(f) for f in past])
    torch.testing.assert_close(out, current, rtol=0, atol=0)


def test_gradient_reaches_the_fusion_at_once_and_the_encoders_after_its_first_update() -> None:
    module = _module()
    *past, current = _features(3, seed=2)
    target = torch.randn_like(current)

    def step() -> None:
        module.zero_grad()
        out = module(current, [module.memory_entry(f) for f in past])
        (out - target).pow(2).mean().backward()

    step()
    assert module.fuse.weight.grad.abs().sum() > 0
    assert module.key.weight.grad.abs().sum() == 0 and module.value.weight.grad.abs().sum() == 0
    with torch.no_grad():
        module.fuse.weight -= 0.1 * module.fuse.weight.grad
    step()
    for layer in (module.key, module.value, module.fuse):
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
