"""mask_head_targets on hand-built masks: exact projection, occluder overlap, boundary ring, R = 0."""

from __future__ import annotations

import pytest
import torch

from instseg.models.mask_heads import mask_head_targets
from instseg.models.mask_heads.targets import project_masks_on_boxes

ALL_KEYS = {"mask", "boundary", "occluder_mask", "occluder_boundary"}


def _square(size: int, y0: int, x0: int, side: int) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.bool)
    m[y0:y0 + side, x0:x0 + side] = True
    return m


def _two_overlapping_squares() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A (back, depth 0) covers pixels 10..29, B (front, depth 1) covers 20..39; A's visible mask
    loses the overlap [20, 30)^2 to B. Boxes are the squares' pixel-edge boxes."""
    a, b = _square(48, 10, 10, 20), _square(48, 20, 20, 20)
    visible = torch.stack([a & ~b, b])
    boxes = torch.tensor([[10.0, 10, 30, 30], [20.0, 20, 40, 40]])
    return visible, boxes, torch.stack([a, b])


@pytest.mark.parametrize("side", [28, 42, 56])
def test_box_exactly_covering_a_square_gives_all_ones(side: int) -> None:
    # Boxes of at least M px: every sample lies inside the square. (Smaller boxes are upsampled
    # bilinearly, which rounds the target's corners, as in torchvision and detectron2.)
    masks = _square(80, 10, 10, side)[None]
    boxes = torch.tensor([[10.0, 10, 10 + side, 10 + side]])
    t = mask_head_targets(masks, boxes, boxes, torch.tensor([0]), occluder="none")
    assert set(t) == {"mask", "boundary"}
    assert t["mask"].dtype == torch.float32 and t["mask"].shape == (1, 28, 28)
    assert (t["mask"] == 1).all()


def test_torchvision_unaligned_projection_would_lose_the_corner() -> None:
    """Why the targets use aligned=True: unaligned sampling is half a pixel off."""
    from torchvision.models.detection.roi_heads import project_masks_on_boxes as tv_project

    masks = _square(48, 10, 10, 28)[None].float()
    boxes = torch.tensor([[10.0, 10, 38, 38]])
    ours = project_masks_on_boxes(masks[:, None], boxes, torch.tensor([0]), 28)[:, 0] >= 0.5
    theirs = tv_project(masks, boxes, torch.tensor([0]), 28) >= 0.5
    assert ours.all()
    assert not theirs[0, -1, -1]


def test_proposal_twice_as_wide_halves_the_target_and_uses_matched_instance() -> None:
    masks = torch.stack([_square(100, 0, 0, 28), _square(100, 10, 10, 28)])
    boxes = torch.tensor([[0.0, 0, 28, 28], [10.0, 10, 38, 38]])
    proposals = torch.tensor([[10.0, 10, 66, 38], [0.0, 0, 28, 28]])
    t = mask_head_targets(masks, boxes, proposals, torch.tensor([1, 0]), occluder="none")
    assert (t["mask"][0, :, :14] == 1).all() and (t["mask"][0, :, 14:] == 0).all()
    assert (t["mask"][1] == 1).all()


def test_boundary_of_a_square_is_a_two_pixel_ring() -> None:
    # Box covers the 56x56 image, 2 px per cell; the square (pixels 14..41) fills cells 7..20.
    masks = _square(56, 14, 14, 28)[None]
    box = torch.tensor([[0.0, 0, 56, 56]])
    t = mask_head_targets(masks, box, box, torch.tensor([0]), occluder="none")
    square = torch.zeros(28, 28)
    square[7:21, 7:21] = 1
    assert torch.equal(t["mask"][0], square)
    ring = torch.zeros(28, 28)
    ring[6:22, 6:22] = 1
    ring[8:20, 8:20] = 0
    assert torch.equal(t["boundary"][0], ring)


@pytest.mark.parametrize("rule", ["reference", "depth"])
def test_occluder_of_two_overlapping_squares(rule: str) -> None:
    visible, boxes, amodal = _two_overlapping_squares()
    depth = torch.tensor([0, 1])
    t = mask_head_targets(visible, boxes, boxes, torch.tensor([0, 1]), occluder=rule, depth=depth,
                          amodal_masks=amodal if rule == "depth" else None)
    assert set(t) == ALL_KEYS
    # For A (box 10..30 -> 20/28 px per cell) the overlap [20, 30)^2 is cells 14..27.
    overlap = torch.zeros(28, 28)
    overlap[14:, 14:] = 1
    assert torch.equal(t["occluder_mask"][0], overlap)
    assert t["occluder_boundary"][0].sum() > 0
    assert (t["occluder_boundary"][0][:12] == 0).all()  # the band hugs the occluder
    # B is in front: A's visible pixels never reach into B's box, so B has no occluder.
    assert (t["occluder_mask"][1] == 0).all() and (t["occluder_boundary"][1] == 0).all()
    # A's own target is its visible L-shape: everything but the overlap.
    assert torch.equal(t["mask"][0], 1 - overlap)


def test_depth_rule_needs_depth_and_rules_are_checked() -> None:
    visible, boxes, _ = _two_overlapping_squares()
    with pytest.raises(ValueError, match="depth"):
        mask_head_targets(visible, boxes, boxes, torch.tensor([0, 1]), occluder="depth")
    with pytest.raises(ValueError, match="occluder"):
        mask_head_targets(visible, boxes, boxes, torch.tensor([0, 1]), occluder="amodal")


@pytest.mark.parametrize("rule", ["reference", "depth", "none"])
@pytest.mark.parametrize("n", [0, 2])
def test_zero_proposals(rule: str, n: int) -> None:
    masks = torch.zeros(n, 32, 32, dtype=torch.bool)
    t = mask_head_targets(masks, torch.zeros(n, 4), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long),
                          resolution=14, occluder=rule, depth=torch.zeros(n, dtype=torch.long))
    assert set(t) == (ALL_KEYS if rule != "none" else {"mask", "boundary"})
    assert all(v.shape == (0, 14, 14) and v.dtype == torch.float32 for v in t.values())
