"""The frozen detector's ROI cache: half-precision features with boolean targets, jittered
proposals, amodal ROIs, caches that join, and ROI features outside the cache, at the smoke scale
with a tiny untrained detector."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torchvision.ops import box_iou

from instseg.data.coco_json import load_coco_gt
from instseg.data.dataset import CocoInstanceDataset
from instseg.experiments import frozen_heads as fh
from instseg.models.detectors import build_detector, with_head
from instseg.models.mask_heads.targets import project_masks_on_boxes

CHANNELS = 16


def _detector(kind: str = "frcnn", channels: int = CHANNELS) -> nn.Module:
    torch.manual_seed(0)
    return build_detector(kind, 10, "fcn", {"conv_channels": channels}, fpn_channels=channels, min_size=64,
                          max_size=64)


@pytest.fixture(scope="module")
def data(smoke_dir: Path) -> dict:
    ann = smoke_dir / "annotations"
    return {"train": CocoInstanceDataset(ann / "train.json", smoke_dir / "images"),
            "val": CocoInstanceDataset(ann / "val.json", smoke_dir / "images"),
            "val_gt": load_coco_gt(ann / "val.json")}


@pytest.fixture(scope="module")
def detector() -> nn.Module:
    return _detector()


@pytest.fixture(scope="module")
def cache(data: dict, detector: nn.Module) -> fh.RoiCache:
    return fh.cache_roi_features(detector, data["train"], range(12), jitter_per_gt=2, seed=0)


@pytest.fixture(scope="module")
def amodal_cache(data: dict, detector: nn.Module) -> fh.RoiCache:
    return fh.cache_roi_features(detector, data["train"], range(4), jitter_per_gt=1, seed=0, amodal=True)


def _projected(masks: Tensor, boxes: Tensor) -> Tensor:
    return project_masks_on_boxes(masks[:, None], boxes, torch.arange(len(boxes)), 28)[:, 0] >= 0.5


def test_cache_holds_half_precision_features_and_boolean_targets(cache: fh.RoiCache, data: dict) -> None:
    n_gt = sum(len(data["train"][i][1]["boxes"]) for i in range(12))
    r = len(cache)
    assert n_gt < r <= 3 * n_gt and int(cache.is_gt.sum()) == n_gt
    assert cache.features.shape == (r, CHANNELS, 14, 14) and cache.features.dtype == torch.float16
    assert set(cache.targets) == {"mask", "boundary", "occluder_mask", "occluder_boundary"}
    assert all(t.shape == (r, 28, 28) and t.dtype == torch.bool for t in cache.targets.values())
    assert torch.isfinite(cache.features.float()).all()
    assert cache.nbytes >= cache.features.numel() * 2


def test_caches_of_two_image_ranges_join_into_the_cache_of_both(cache: fh.RoiCache, data: dict,
                                                                detector: nn.Module) -> None:
    halves = [fh.cache_roi_features(detector, data["train"], r, jitter_per_gt=2, seed=0) for r in (range(5), range(5, 12))]
    joined = fh.RoiCache.concat(halves)
    for name in ("features", "boxes", "image_index", "instance", "is_gt", "category_ids", "labels", "annotation_ids"):
        assert torch.equal(getattr(joined, name), getattr(cache, name)), name
    assert sorted(joined.targets) == sorted(cache.targets)
    assert all(torch.equal(joined.targets[k], cache.targets[k]) for k in cache.targets)
    other = fh.cache_roi_features(detector, data["train"], range(2), jitter_per_gt=1, seed=0, occluder_rule="none")
    with pytest.raises(ValueError, match="different rules"):
        fh.RoiCache.concat([cache, other])


def test_gt_rois_targets_are_the_projected_gt_masks(cache: fh.RoiCache, data: dict) -> None:
    for i in range(12):
        target = data["train"][i][1]
        rois = (cache.image_index == i) & cache.is_gt
        assert torch.equal(cache.boxes[rois], target["boxes"])
        assert torch.equal(cache.targets["mask"][rois], _projected(target["masks"], target["boxes"]))


def test_jittered_rois_overlap_their_instance(cache: fh.RoiCache, data: dict) -> None:
    for i in range(12):
        gt_boxes = data["train"][i][1]["boxes"]
        jittered = (cache.image_index == i) & ~cache.is_gt
        iou = box_iou(cache.boxes[jittered], gt_boxes)[torch.arange(int(jittered.sum())), cache.instance[jittered]]
        assert (iou >= 0.5).all()
    assert not torch.equal(cache.boxes[~cache.is_gt][:1], cache.boxes[cache.is_gt][:1])


def test_amodal_cache_targets_amodal_masks_on_amodal_boxes(amodal_cache: fh.RoiCache, data: dict) -> None:
    assert {"mask", "visible_mask", "occluder_mask"} <= set(amodal_cache.targets)
    for i in range(4):
        target = data["train"][i][1]
        rois = (amodal_cache.image_index == i) & amodal_cache.is_gt
        assert torch.equal(amodal_cache.boxes[rois], target["amodal_boxes"])
        boxes = target["amodal_boxes"]
        assert torch.equal(amodal_cache.targets["mask"][rois], _projected(target["amodal_masks"], boxes))
        assert torch.equal(amodal_cache.targets["visible_mask"][rois], _projected(target["masks"], boxes))


def test_fcos_detector_caches_too(data: dict) -> None:
    # torchvision's FCOS head needs GroupNorm(32)-divisible widths at construction
    cache = fh.cache_roi_features(_detector("fcos", 32), data["train"], [0, 1], jitter_per_gt=0, seed=0)
    assert cache.features.shape[1:] == (32, 14, 14) and bool(cache.is_gt.all())


def test_roi_features_match_the_cache_and_with_head_predicts_extra_maps(data: dict, detector: nn.Module,
                                                                        cache: fh.RoiCache) -> None:
    first = cache.image_index == cache.image_index[0]
    index = int(cache.image_index[0])
    feats = fh.roi_features(detector, data["train"], index, cache.boxes[first])
    torch.testing.assert_close(feats.half(), cache.features[first])
    head = fh.build_head(fh.TABLE_3_3[3], CHANNELS, CHANNELS)
    model = with_head(detector, head)
    assert model.roi_heads.mask_branch.head is not detector.roi_heads.mask_branch.head
    assert not model.roi_heads.mask_branch.class_specific
    with torch.no_grad():
        pred = model([data["val"][0][0]])[0]
    for key in ("masks", "occluder_masks", "occludee_contours", "occluder_contours"):
        assert key in pred and pred[key].shape[-2:] == data["val"][0][0].shape[-2:]
