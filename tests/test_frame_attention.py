"""The frame-level prototypical attention module: eq. 5.7's weights sum to one over frames, each
memory frame's readout is eq. 5.6 on its stored prototypes, an empty memory aggregates the current
frame alone, and the training gradient reaches the key and value encoders."""

from __future__ import annotations

import torch

from instseg.video.layers.frame_attention import FramePrototypicalAttention
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


def test_gradient_reaches_the_key_and_value_encoders() -> None:
    module = _module()
    *past, current = _features(3, seed=2)
    out = module(current, [module.memory_entry(f) for f in past])
    out.pow(2).mean().backward()
    for layer in (module.key, module.value, module.fuse):
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
