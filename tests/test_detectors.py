"""Detectors keep torchvision's contract while hosting any mask head."""

from __future__ import annotations

import pytest
import torch

from instseg.models.detectors import EXTRA_MAP_KEYS, build_detector
from instseg.models.mask_heads import count_parameters

SIZE = 64


def _target(n_classes: int) -> dict[str, torch.Tensor]:
    masks = torch.zeros(3, SIZE, SIZE, dtype=torch.uint8)
    masks[0, 4:30, 4:30] = 1
    masks[1, 20:50, 20:56] = 1
    masks[2, 36:62, 2:28] = 1
    masks[0] &= ~masks[1]
    boxes = torch.tensor([[4, 4, 30, 30], [20, 20, 56, 50], [2, 36, 28, 62]], dtype=torch.float32)
    labels = torch.tensor([1, n_classes, 1 + (n_classes > 1)])
    return {"boxes": boxes, "labels": labels, "masks": masks, "depth": torch.tensor([0, 1, 2])}


def _model(detector: str, head: str, n_classes: int = 3, **kw):
    torch.manual_seed(0)
    return build_detector(detector, n_classes, head, {"conv_channels": 32}, fpn_channels=32, min_size=SIZE,
                          max_size=SIZE, max_rois_per_image=8, **kw)


@pytest.mark.parametrize("detector", ["frcnn", "fcos"])
@pytest.mark.parametrize("head", ["fcn", "bcnet"])
def test_training_returns_finite_losses_that_reach_the_mask_head(detector: str, head: str) -> None:
    model = _model(detector, head, occluder_rule="depth")
    model.train()
    losses = model([torch.rand(3, SIZE, SIZE)], [_target(3)])
    assert all(torch.isfinite(v) for v in losses.values())
    expected = {"loss_mask"} | ({"loss_boundary", "loss_occluder_mask", "loss_occluder_boundary"} if head == "bcnet" else set())
    assert expected <= set(losses)
    sum(losses.values()).backward()
    branch = model.roi_heads.mask_branch if detector == "frcnn" else model.mask_branch
    grads = [p.grad for p in branch.head.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("detector", ["frcnn", "fcos"])
def test_inference_pastes_every_map_to_image_size(detector: str) -> None:
    model = _model(detector, "bcnet", score_thresh=0.0) if detector == "fcos" else _model(detector, "bcnet", box_score_thresh=0.0)
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, SIZE, SIZE), torch.rand(3, 48, 80)])
    assert len(out) == 2
    for pred, (h, w) in zip(out, [(SIZE, SIZE), (48, 80)]):
        n = len(pred["boxes"])
        assert pred["masks"].shape == (n, 1, h, w)
        for key in EXTRA_MAP_KEYS:
            assert pred[key].shape == (n, 1, h, w)
        assert pred["labels"].dtype == torch.int64 and pred["scores"].shape == (n,)
    assert len(out[0]["boxes"]) > 0, "with score threshold 0 an untrained detector still detects"


@pytest.mark.parametrize("n_classes", [1, 7])
def test_any_number_of_classes_and_class_specific_fcn(n_classes: int) -> None:
    model = build_detector("frcnn", n_classes, "fcn", {"conv_channels": 16, "class_specific": True}, fpn_channels=16,
                           min_size=SIZE, max_size=SIZE, occluder_rule="none", box_score_thresh=0.0)
    model.train()
    losses = model([torch.rand(3, SIZE, SIZE)], [_target(n_classes)])
    assert torch.isfinite(losses["loss_mask"])
    model.eval()
    with torch.no_grad():
        pred = model([torch.rand(3, SIZE, SIZE)])[0]
    assert pred["masks"].shape[1:] == (1, SIZE, SIZE)
    assert len(pred["labels"]) > 0 and int(pred["labels"].max()) <= n_classes


def test_image_without_instances_trains() -> None:
    model = _model("frcnn", "bcnet")
    model.train()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
             "masks": torch.zeros(0, SIZE, SIZE, dtype=torch.uint8)}
    losses = model([torch.rand(3, SIZE, SIZE), torch.rand(3, SIZE, SIZE)], [empty, _target(3)])
    assert all(torch.isfinite(v) for v in losses.values())


def test_bilayer_head_has_more_parameters_than_fcn_on_the_same_detector() -> None:
    fcn, bcnet = _model("frcnn", "fcn"), _model("frcnn", "bcnet")
    assert count_parameters(bcnet) - count_parameters(fcn) == (
        count_parameters(bcnet.roi_heads.mask_branch.head) - count_parameters(fcn.roi_heads.mask_branch.head))
    with pytest.raises(ValueError, match="unknown detector"):
        build_detector("yolo", 3)
