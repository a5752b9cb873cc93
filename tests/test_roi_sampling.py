"""roi_align_bilinear against torchvision's RoIAlign (aligned, one sample per bin), values and gradients."""

import pytest
import torch
from torchvision.ops import roi_align

from instseg.video.layers.roi_sampling import roi_align_bilinear


def _boxes(generator: torch.Generator, n: int, size: float) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * size * 0.7
    wh = 2 + torch.rand(n, 2, generator=generator) * size * 0.3
    return torch.cat([xy, (xy + wh).clamp(max=size)], dim=1)


@pytest.mark.parametrize("map_size,scale", [(32, 0.25), (16, 0.125), (4, 1 / 32)])
def test_matches_torchvision_roi_align_and_its_gradient(map_size: int, scale: float) -> None:
    g = torch.Generator().manual_seed(map_size)
    features = torch.randn(3, 5, map_size, map_size, generator=g, dtype=torch.float64, requires_grad=True)
    boxes = [_boxes(g, n, 128.0).double() for n in (4, 0, 7)]
    ours = roi_align_bilinear(features, boxes, 14, scale)
    ref = roi_align(features, boxes, 14, spatial_scale=scale, sampling_ratio=1, aligned=True)
    assert ours.shape == (11, 5, 14, 14)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-10)
    weights = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), features)
    (grad_ref,) = torch.autograd.grad((ref * weights).sum(), features)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=0, atol=1e-10)


def test_hand_computed_sample_and_no_boxes() -> None:
    # a 2x2 map, a box covering it at scale 1: the single bin's sample is the centre, the mean of all four
    features = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    out = roi_align_bilinear(features, [torch.tensor([[0.0, 0.0, 2.0, 2.0]])], 1, 1.0)
    assert out.item() == pytest.approx(1.5)
    assert roi_align_bilinear(features, [torch.zeros((0, 4))], 14, 1.0).shape == (0, 1, 14, 14)
