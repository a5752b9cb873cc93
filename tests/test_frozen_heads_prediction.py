"""Masks of a head on fixed boxes: COCO results on the given detections, and a known answer (an
oracle head's masks paste back to the ground truth), at the smoke scale with a tiny untrained
detector."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from instseg.evaluation import evaluate
from instseg.experiments import frozen_heads as fh
from instseg.experiments.stats import per_instance_iou
from instseg.models.mask_heads import mask_head_targets

CHANNELS = 16


def test_predictions_are_coco_results_on_the_given_boxes(smoke_frozen: dict) -> None:
    data, detector = smoke_frozen, smoke_frozen["detector"]
    cache = fh.cache_roi_features(detector, data["train"], range(12), jitter_per_gt=2, seed=0)
    head = fh.train_head(fh.TABLE_3_3[0], cache, iters=2, batch_rois=8, lr=1e-3, seed=0, channels=CHANNELS)
    detections = fh.gt_detections(data["val"])
    records = fh.predict_masks(detector, head, data["val"], detections)
    assert len(records) == sum(len(d["boxes"]) for d in detections)
    assert {"image_id", "category_id", "score", "bbox", "segmentation"} <= set(records[0])
    assert all(r["score"] == 1.0 for r in records)
    assert evaluate(data["val_gt"], records, "segm")["AP"] is not None


class _Oracle(nn.Module):
    """Returns the given logits in call order: a head that knows the targets."""

    def __init__(self, logits: Tensor) -> None:
        super().__init__()
        self.logits, self.position = logits, 0

    def forward(self, roi_features: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        out = self.logits[self.position:self.position + len(roi_features)]
        self.position += len(roi_features)
        return {"mask": out}


def test_perfect_masks_on_gt_boxes_paste_back_to_the_ground_truth(smoke_frozen: dict) -> None:
    """The oracle's 28x28 masks pasted back lose thin details (the C-shape's and chevron's arms are
    1-2 pixels wide at 64x64), so every instance keeps IoU >= 0.5 (AP50 exactly 100) and the mean
    IoU stays high, while AP at stricter IoUs falls a little below 100."""
    data, detector = smoke_frozen, smoke_frozen["detector"]
    logits = []
    for i in range(len(data["val"])):
        target = data["val"][i][1]
        boxes = target["boxes"]
        mask = mask_head_targets(target["masks"], boxes, boxes, torch.arange(len(boxes)), occluder="none")["mask"]
        logits.append(mask[:, None] * 40 - 20)
    records = fh.predict_masks(detector, _Oracle(torch.cat(logits)), data["val"], fh.gt_detections(data["val"]))
    metrics = evaluate(data["val_gt"], records, "segm")
    ious = per_instance_iou(data["val_gt"], records)
    assert ious.min() >= 0.5 and ious.mean() > 0.9
    assert metrics["AP50"] == 100.0 and metrics["AP75"] > 90.0 and metrics["AP"] > 75.0
