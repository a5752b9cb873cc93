"""Occlusion targets and the COCO-OCC rule, against hand-computed cases and scikit-image."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from skimage import morphology

from instseg.data.occlusion import (box_iou_xywh, box_overlap, box_regions, boundary_targets, coco_occ_image_ids,
                                    mask_boxes, occluder_masks_depth, occluder_masks_reference)


def rect(h: int, w: int, x0: int, x1: int, y0: int, y1: int) -> torch.Tensor:
    m = torch.zeros((h, w), dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


# ----- boxes

def test_box_overlap_iou_and_min_by_hand() -> None:
    a = torch.tensor([[0.0, 0, 4, 4]])
    b = torch.tensor([[2.0, 0, 6, 4], [1, 1, 3, 3], [10, 10, 12, 12]])
    # b0: inter 8, union 24; b1 inside a: inter 4, union 16; b2 disjoint
    torch.testing.assert_close(box_overlap(a, b, "iou"), torch.tensor([[1 / 3, 0.25, 0.0]]))
    torch.testing.assert_close(box_overlap(a, b, "min"), torch.tensor([[0.5, 1.0, 0.0]]))
    torch.testing.assert_close(box_iou_xywh(torch.tensor([[0.0, 0, 4, 4]]), torch.tensor([[2.0, 0, 4, 4]])),
                               torch.tensor([[1 / 3]]))
    degenerate = torch.tensor([[1.0, 1, 1, 3]])
    assert box_overlap(degenerate, degenerate, "min").item() == 0.0
    with pytest.raises(ValueError):
        box_overlap(a, b, "dice")


def test_box_regions_truncate_like_the_reference() -> None:
    regions = box_regions(torch.tensor([[0.5, 0.5, 3.7, 3.2], [2.0, 1.0, 4.0, 2.0]]), 5, 6)
    np.testing.assert_array_equal(regions[0].numpy(), rect(5, 6, 0, 3, 0, 3).numpy())
    np.testing.assert_array_equal(regions[1].numpy(), rect(5, 6, 2, 4, 1, 2).numpy())


def test_mask_boxes_are_exclusive_and_zero_for_empty() -> None:
    masks = torch.stack([rect(6, 7, 2, 5, 1, 4), torch.zeros((6, 7), dtype=torch.bool), rect(6, 7, 0, 7, 5, 6)])
    torch.testing.assert_close(mask_boxes(masks), torch.tensor([[2.0, 1, 5, 4], [0, 0, 0, 0], [0, 5, 7, 6]]))


# ----- BCNet reference occluders

def reference_scene() -> tuple[torch.Tensor, torch.Tensor]:
    """12x12. Box IoUs: (0,1) = 12/60 = 0.2; (1,2) = 2/40 = 0.05 exactly; (0,2) = 0."""
    h = w = 12
    masks = torch.stack([rect(h, w, 0, 6, 0, 6), rect(h, w, 3, 10, 0, 6), rect(h, w, 9, 11, 4, 7)])
    boxes = torch.tensor([[0.0, 0, 6, 6], [4, 0, 10, 6], [9, 4, 11, 7]])
    return masks, boxes


def test_reference_occluders_by_hand() -> None:
    masks, boxes = reference_scene()
    occ = occluder_masks_reference(masks, boxes, iou_thresh=0.05, min_pixels=0)
    # 0: mask 1 inside box 0 = x[3,6) y[0,6) (18 px). 1: mask 0 inside box 1 = x[4,6) y[0,6) (12 px);
    # mask 2 is left out: IoU(1, 2) is exactly 0.05, not > 0.05. 2: no box overlaps enough.
    np.testing.assert_array_equal(occ[0].numpy(), rect(12, 12, 3, 6, 0, 6).numpy())
    np.testing.assert_array_equal(occ[1].numpy(), rect(12, 12, 4, 6, 0, 6).numpy())
    assert not occ[2].any()
    occ = occluder_masks_reference(masks, boxes, iou_thresh=0.049, min_pixels=0)
    np.testing.assert_array_equal(occ[1].numpy(), (rect(12, 12, 4, 6, 0, 6) | rect(12, 12, 9, 10, 4, 6)).numpy())
    # box 2 now meets box 1: mask 1 inside box 2 = x[9,10) y[4,6)
    np.testing.assert_array_equal(occ[2].numpy(), rect(12, 12, 9, 10, 4, 6).numpy())


def test_reference_min_pixels_cut_is_strict() -> None:
    masks, boxes = reference_scene()
    kept = occluder_masks_reference(masks, boxes, min_pixels=17)  # 18 > 17, 12 <= 17
    assert kept[0].sum() == 18 and not kept[1].any()
    assert not occluder_masks_reference(masks, boxes, min_pixels=18)[0].any()  # 18 is not > 18
    default = occluder_masks_reference(masks, boxes)  # min_pixels=20 drops both
    assert default.dtype == torch.bool and default.shape == masks.shape and not default.any()


def test_targets_handle_no_instances() -> None:
    none = torch.zeros((0, 5, 6), dtype=torch.bool)
    assert occluder_masks_reference(none, torch.zeros((0, 4))).shape == (0, 5, 6)
    assert occluder_masks_depth(none, torch.zeros(0, dtype=torch.int64), amodal_masks=none).shape == (0, 5, 6)


# ----- depth-aware occluders

def depth_scene() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """10x10, back to front: A (L-shaped), B, C, D. Visible = amodal minus everything in front."""
    h = w = 10
    a = rect(h, w, 0, 6, 0, 6) & ~rect(h, w, 0, 2, 0, 2)
    b = rect(h, w, 4, 9, 0, 6)
    c = rect(h, w, 0, 3, 4, 9)
    d = rect(h, w, 0, 2, 0, 2)  # inside A's box, outside A's amodal mask
    amodal = torch.stack([a, b, c, d])
    visible = amodal.clone()
    for i in range(4):
        for j in range(i + 1, 4):
            visible[i] &= ~amodal[j]
    return visible, amodal, torch.tensor([0, 1, 2, 3])


def test_depth_occluders_use_only_objects_in_front() -> None:
    visible, amodal, depth = depth_scene()
    occ = occluder_masks_depth(visible, depth, amodal_masks=amodal)
    # A: B's visible x[4,9) y[0,6) and C's visible x[0,3) y[4,9) touch A; both cut to A's box x[0,6) y[0,6).
    # D is in front and inside A's box, but does not touch A's amodal mask.
    expected_a = rect(10, 10, 4, 6, 0, 6) | rect(10, 10, 0, 3, 4, 6)
    np.testing.assert_array_equal(occ[0].numpy(), expected_a.numpy())
    # B: only C and D are in front and neither touches B; A is behind B and never counts.
    assert not occ[1].any() and not occ[2].any() and not occ[3].any()


def test_depth_occluders_with_boxes_instead_of_amodal() -> None:
    visible, amodal, depth = depth_scene()
    boxes = mask_boxes(amodal)
    occ = occluder_masks_depth(visible, depth, boxes=boxes)
    expected_a = rect(10, 10, 4, 6, 0, 6) | rect(10, 10, 0, 3, 4, 6) | rect(10, 10, 0, 2, 0, 2)
    np.testing.assert_array_equal(occ[0].numpy(), expected_a.numpy())
    # depth order, not the index, decides: reversing the depths makes A the front-most object
    assert not occluder_masks_depth(visible, depth.flip(0), boxes=boxes)[0].any()


# ----- the depth rule on the training call paths: amodal masks reach it

def depth_target(with_amodal: bool = True) -> dict[str, torch.Tensor]:
    """depth_scene as a dataset target (uint8 masks, xyxy visible and amodal boxes). A's visible box
    is x[0,4) y[0,6): C's visible x[0,3) y[4,6) hides part of A inside it; D (in front) lies inside
    it too, without touching A's amodal mask."""
    visible, amodal, depth = depth_scene()
    target = {"masks": visible.to(torch.uint8), "boxes": mask_boxes(visible), "labels": torch.ones(4, dtype=torch.long),
              "depth": depth}
    if with_amodal:
        target |= {"amodal_masks": amodal.to(torch.uint8), "amodal_boxes": mask_boxes(amodal)}
    return target


C_IN_A, D = rect(10, 10, 0, 3, 4, 6), rect(10, 10, 0, 2, 0, 2)  # C's visible part inside A's visible box; D


def _projected(mask: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    from instseg.models.mask_heads.targets import project_masks_on_boxes

    return project_masks_on_boxes(mask[None, None].float(), box[None], torch.tensor([0]), 28)[0, 0] >= 0.5


def test_cached_roi_targets_pass_amodal_masks_to_the_depth_rule() -> None:
    """The frozen-detector cache's target builder (``roi_targets``): with the target's amodal masks
    D is no occluder of A; only data without them falls back to the box region (D counts)."""
    from instseg.experiments.frozen_heads import roi_targets

    target = depth_target()
    a_box = target["boxes"][:1]
    assert torch.equal(a_box[0], torch.tensor([0.0, 0, 4, 6]))
    exact = roi_targets(target, a_box, torch.tensor([0]), "auto", amodal=False)["occluder_mask"][0]
    assert torch.equal(exact, _projected(C_IN_A, a_box[0])), "C only: B is outside the box, D does not touch A"
    approx = roi_targets(depth_target(with_amodal=False), a_box, torch.tensor([0]), "auto", amodal=False)
    assert torch.equal(approx["occluder_mask"][0], _projected(C_IN_A | D, a_box[0]))
    # amodal training: ROIs on A's amodal box x[0,6) y[0,6) keep B's and C's visible parts, not D's
    a_amodal_box = target["amodal_boxes"][0]
    amodal = roi_targets(target, a_amodal_box[None], torch.tensor([0]), "depth", amodal=True)["occluder_mask"][0]
    assert torch.equal(amodal, _projected(rect(10, 10, 4, 6, 0, 6) | rect(10, 10, 0, 3, 4, 6), a_amodal_box))


class _SpyHead(torch.nn.Module):
    """A mask head that records the targets its loss gets."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 1, 1)
        self.seen: list[dict[str, torch.Tensor]] = []

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return {"mask": torch.nn.functional.interpolate(self.conv(features), size=28)}

    def loss(self, outputs: dict, targets: dict) -> dict[str, torch.Tensor]:
        self.seen.append(dict(targets))
        return {"loss_mask": outputs["mask"].sum() * 0}


def test_mask_branch_passes_amodal_masks_to_the_depth_rule() -> None:
    """End-to-end training's target builder (``RoIMaskBranch.losses``): same answer as the cache."""
    from torchvision.ops import MultiScaleRoIAlign

    from instseg.models.mask_branch import RoIMaskBranch

    head = _SpyHead()
    branch = RoIMaskBranch(head, MultiScaleRoIAlign(["0"], 14, 2), occluder_rule="auto")
    features = {"0": torch.randn(1, 8, 10, 10)}
    for with_amodal, expected in ((True, C_IN_A), (False, C_IN_A | D)):
        target = depth_target(with_amodal)
        branch.losses(features, [(10, 10)], [target["boxes"][:1]], [torch.tensor([0])], [target])
        occluder = head.seen[-1]["occluder_mask"][0].bool()
        assert torch.equal(occluder, _projected(expected, target["boxes"][0]))


def test_detector_transform_resizes_amodal_masks_like_masks() -> None:
    """torchvision resizes only "masks": the detectors' transform must resize the amodal masks
    (and boxes) the same way, or the depth rule would read them in another frame."""
    from instseg.models.detectors import build_detector

    model = build_detector("frcnn", 2, "fcn", {"conv_channels": 8}, fpn_channels=16, min_size=64, max_size=100)
    model.train()
    masks = (torch.rand(3, 37, 50, generator=torch.Generator().manual_seed(0)) > 0.6).to(torch.uint8)
    boxes = torch.tensor([[1.0, 2, 30, 20], [5, 5, 45, 35], [0, 0, 50, 37]])
    target = {"boxes": boxes, "labels": torch.ones(3, dtype=torch.long), "masks": masks, "amodal_masks": masks.clone(),
              "amodal_boxes": boxes.clone()}
    _, (resized,) = model.transform([torch.rand(3, 37, 50)], [target])
    assert resized["masks"].shape == (3, 64, 86)
    assert torch.equal(resized["amodal_masks"], resized["masks"]) and resized["amodal_masks"].dtype == torch.uint8
    torch.testing.assert_close(resized["amodal_boxes"], resized["boxes"])
    assert target["amodal_masks"].shape == (3, 37, 50), "the caller's target is not modified"
    none = torch.zeros(0, 37, 50, dtype=torch.uint8)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "masks": none, "amodal_masks": none}
    _, (resized,) = model.transform([torch.rand(3, 37, 50)], [empty])
    assert resized["amodal_masks"].shape == (0, 64, 86)
    # and a training step reaches the depth rule with both in one frame
    model.roi_heads.mask_branch.occluder_rule = "depth"
    target |= {"depth": torch.tensor([0, 1, 2])}
    losses = model([torch.rand(3, 37, 50)], [target])
    assert torch.isfinite(sum(losses.values()))


# ----- boundaries

def skimage_band(mask: np.ndarray, width: int) -> np.ndarray:
    footprint = np.ones((2 * width + 1,) * 2, dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # binary_* are deprecated in skimage 0.26
        return morphology.binary_dilation(mask, footprint) != morphology.binary_erosion(mask, footprint)


def test_boundary_by_hand() -> None:
    band = boundary_targets(rect(6, 6, 1, 4, 1, 4))
    expected = rect(6, 6, 0, 5, 0, 5)
    expected[2, 2] = False
    np.testing.assert_array_equal(band.numpy(), expected.numpy())
    # the image border does not erode: a full mask has no band, a mask on the edge has no band along it
    assert not boundary_targets(torch.ones((4, 5), dtype=torch.bool)).any()
    np.testing.assert_array_equal(boundary_targets(rect(4, 5, 0, 5, 0, 2)).numpy(), rect(4, 5, 0, 5, 1, 3).numpy())


@pytest.mark.parametrize("width", [1, 2])
def test_boundary_matches_skimage_on_random_masks(width: int) -> None:
    rng = np.random.default_rng(width)
    for density in (0.1, 0.5, 0.9):
        masks = rng.random((6, 17, 23)) < density
        masks[0] = False
        masks[1] = True
        band = boundary_targets(torch.from_numpy(masks), width=width).numpy()
        for m, b in zip(masks, band):
            np.testing.assert_array_equal(b, skimage_band(m, width))
            np.testing.assert_array_equal(b, morphology.dilation(m, np.ones((2 * width + 1,) * 2))
                                          != morphology.erosion(m, np.ones((2 * width + 1,) * 2)))


def test_boundary_keeps_leading_shape_and_treats_nonzero_as_foreground() -> None:
    masks = (torch.rand(2, 3, 9, 8, generator=torch.Generator().manual_seed(0)) > 0.5).to(torch.float32) * 0.7
    band = boundary_targets(masks)
    assert band.shape == (2, 3, 9, 8) and band.dtype == torch.bool
    np.testing.assert_array_equal(band[1, 2].numpy(), skimage_band(masks[1, 2].numpy() != 0, 1))
    assert boundary_targets(torch.zeros((0, 4, 4))).shape == (0, 4, 4)
    with pytest.raises(ValueError):
        boundary_targets(masks, width=0)


# ----- COCO-OCC

def gt_with(boxes_by_image: dict[int, list[tuple[list[float], int]]]) -> dict:
    images = [{"id": i, "file_name": f"{i}.png", "height": 20, "width": 20} for i in boxes_by_image]
    anns = [{"id": 100 * i + k, "image_id": i, "category_id": 1, "bbox": box, "iscrowd": crowd}
            for i, boxes in boxes_by_image.items() for k, (box, crowd) in enumerate(boxes)]
    return {"images": images, "annotations": anns, "categories": [{"id": 1}]}


def test_coco_occ_iou_vs_min_by_hand() -> None:
    gt = gt_with({
        7: [([0, 0, 3, 1], 0), ([2, 0, 3, 1], 0)],        # IoU exactly 1/5, min ratio 1/3
        3: [([0, 0, 10, 10], 0), ([8, 0, 2, 2], 0)],      # small box inside: IoU 0.04, min ratio 1
        5: [([0, 0, 4, 4], 0), ([0, 0, 4, 4], 1)],        # the only overlap is with a crowd region
        9: [([0, 0, 4, 4], 0)],                           # a single object
        4: [([0, 0, 2, 2], 0), ([5, 5, 2, 2], 0), ([1, 0, 2, 2], 0)],  # third box: IoU 2/6 with the first
    })
    assert coco_occ_image_ids(gt, threshold=0.2) == [7, 4]
    assert coco_occ_image_ids(gt, threshold=0.2 + 1e-9) == [4]
    assert coco_occ_image_ids(gt, threshold=0.2, ratio="min") == [7, 3, 4]
    assert coco_occ_image_ids(gt, threshold=0.5, ratio="min") == [3, 4]


def test_coco_occ_takes_the_box_from_the_mask_when_bbox_is_absent() -> None:
    gt = gt_with({1: [([0, 0, 4, 4], 0), ([2, 0, 4, 4], 0)]})
    del gt["annotations"][1]["bbox"]
    gt["annotations"][1]["segmentation"] = [[2, 0, 6, 0, 6, 4, 2, 4]]
    assert coco_occ_image_ids(gt, threshold=1 / 3) == [1]
    assert coco_occ_image_ids(gt, threshold=0.34) == []


# ----- CUDA

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_targets_on_cuda_match_cpu() -> None:
    visible, amodal, depth = depth_scene()
    masks, boxes = reference_scene()
    cuda = torch.device("cuda")
    ref = occluder_masks_reference(masks.to(cuda), boxes.to(cuda), min_pixels=0)
    assert ref.is_cuda
    torch.testing.assert_close(ref.cpu(), occluder_masks_reference(masks, boxes, min_pixels=0))
    dep = occluder_masks_depth(visible.to(cuda), depth.to(cuda), amodal_masks=amodal.to(cuda))
    torch.testing.assert_close(dep.cpu(), occluder_masks_depth(visible, depth, amodal_masks=amodal))
    batch = torch.rand(4, 2, 33, 31, generator=torch.Generator().manual_seed(1)) > 0.5
    torch.testing.assert_close(boundary_targets(batch.to(cuda)).cpu(), boundary_targets(batch))
