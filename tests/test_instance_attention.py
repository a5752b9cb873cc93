"""Instance-level prototypical attention: foreground prototypes see only the mask's pixels and
background ones only the rest, the two maps sum to one, the 0-prototype rows of Table 5.6 work,
eq. 5.8's update, prototype correspondence through the propagated start, and the refine head."""

from __future__ import annotations

import torch

from instseg.video.layers.instance_attention import (
    TemporalSegmentationHead, attention_maps, instance_prototypes, propagate,
)


def _roi(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(3, 6, 8, 8, generator=g, dtype=torch.float64)
    masks = torch.zeros(3, 8, 8, dtype=torch.float64)
    masks[:, 2:6, 1:7] = 0.9
    return features, masks


def test_foreground_prototypes_use_the_mask_and_background_the_rest() -> None:
    features, masks = _roi()
    fg, bg = instance_prototypes(features, masks, 3, 2, iters=4, temperature=6.0)
    assert fg.shape == (3, 3, 6) and bg.shape == (3, 2, 6)
    inside = (masks >= 0.5)[:, None].expand_as(features)
    noise = 50 * torch.randn_like(features)
    fg2, bg2 = instance_prototypes(torch.where(inside, features, noise), masks, 3, 2, 4, 6.0)
    torch.testing.assert_close(fg2, fg)  # the background changed, the foreground prototypes did not
    fg3, bg3 = instance_prototypes(torch.where(inside, noise, features), masks, 3, 2, 4, 6.0)
    torch.testing.assert_close(bg3, bg)


def test_maps_sum_to_one_and_zero_prototype_rows_work() -> None:
    features, masks = _roi(1)
    fg, bg = instance_prototypes(features, masks, 2, 2, 3, 6.0)
    maps = attention_maps(features, fg, bg, 6.0)
    assert maps.shape == (3, 2, 8, 8)
    torch.testing.assert_close(maps.sum(1), torch.ones(3, 8, 8, dtype=torch.float64))
    fg0, bg1 = instance_prototypes(features, masks, 0, 1, 3, 6.0)
    only_bg = attention_maps(features, fg0, bg1, 6.0)
    assert (only_bg[:, 0] == 0).all() and (only_bg[:, 1] == 1).all()
    assert (attention_maps(features, *instance_prototypes(features, masks, 0, 0, 3, 6.0), 6.0) == 0).all()


def test_momentum_update_is_eq_5_8_and_starts_from_the_first_frame() -> None:
    previous, current = torch.full((1, 2, 3), 2.0), torch.full((1, 2, 3), 4.0)
    torch.testing.assert_close(propagate(previous, current, 0.2), torch.full((1, 2, 3), 0.8 * 2 + 0.2 * 4))
    assert propagate(None, current, 0.2) is current
    torch.testing.assert_close(propagate(previous, current, 1.0), current)  # no propagation
    torch.testing.assert_close(propagate(previous, current, 0.0), previous)  # initial prototypes


def test_a_propagated_start_keeps_prototype_indices_in_correspondence() -> None:
    """Three well-separated parts of the object (rows of the mask): started from the previous
    frame's prototypes in reversed order, EM keeps that order; started afresh it does not."""
    g = torch.Generator().manual_seed(2)
    features = 0.1 * torch.randn(1, 6, 8, 8, generator=g, dtype=torch.float64)
    masks = torch.zeros(1, 8, 8, dtype=torch.float64)
    masks[:, 1:7, 1:7] = 1.0
    for part, rows in enumerate((slice(1, 3), slice(3, 5), slice(5, 7))):
        features[0, part, rows, 1:7] += 5.0
    fg, bg = instance_prototypes(features, masks, 3, 2, 6, 6.0)
    moved = features + 0.05 * torch.randn(features.shape, generator=g, dtype=torch.float64)
    fg_next, _ = instance_prototypes(moved, masks, 3, 2, 6, 6.0, init=(fg.flip(1), bg))
    assert (torch.cdist(fg_next, fg.flip(1)).argmin(-1) == torch.arange(3)).all()
    fresh, _ = instance_prototypes(moved, masks, 3, 2, 6, 6.0)
    assert not (torch.cdist(fresh, fg.flip(1)).argmin(-1) == torch.arange(3)).all()


def test_refine_head_output_and_gradient() -> None:
    torch.manual_seed(0)
    features, masks = _roi(3)
    features = features.float().requires_grad_()
    fg, bg = instance_prototypes(features, masks.float(), 2, 2, 2, 6.0)
    maps = attention_maps(features, fg, bg, 6.0)
    head = TemporalSegmentationHead(6, hidden=8)
    logits = head(features, maps, torch.logit(masks.float().clamp(0.05, 0.95)))
    assert logits.shape == (3, 16, 16)
    logits.mean().backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    assert all(p.grad is not None for p in head.parameters())
