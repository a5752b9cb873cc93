"""Mask GrabCut: the classical row of Table 4.1. A mask from each detected box by OpenCV's
``grabCut`` (colour GMMs + graph cut, initialised with the box as "probably foreground" and
everything outside as background), so it needs no mask annotation of any category.

GrabCut runs on a crop around the box (the box plus ``margin`` of its size on each side), which
bounds its cost per detection and keeps the background model local. A box that leaves no
background in the crop, or is under 2 px, falls back to the filled box.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from instseg.models.inference import detections_to_coco


def grabcut_mask(image: np.ndarray, box: Sequence[float], iterations: int = 5, margin: float = 0.25) -> np.ndarray:
    """Bool mask [H, W] of the object in ``box`` (x1, y1, x2, y2) of ``image`` (uint8 RGB [H, W, 3])."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"grabcut_mask needs a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    out = np.zeros((height, width), dtype=bool)
    bx1, by1 = max(int(np.floor(x1)), 0), max(int(np.floor(y1)), 0)
    bx2, by2 = min(int(np.ceil(x2)), width), min(int(np.ceil(y2)), height)
    if bx2 - bx1 < 2 or by2 - by1 < 2:
        out[by1:by2, bx1:bx2] = True
        return out
    mx, my = int(np.ceil(margin * (bx2 - bx1))), int(np.ceil(margin * (by2 - by1)))
    cx1, cy1, cx2, cy2 = max(bx1 - mx, 0), max(by1 - my, 0), min(bx2 + mx, width), min(by2 + my, height)
    if (cx1, cy1, cx2, cy2) == (bx1, by1, bx2, by2):  # no background pixels to model
        out[by1:by2, bx1:bx2] = True
        return out
    crop = np.ascontiguousarray(image[cy1:cy2, cx1:cx2, ::-1])  # OpenCV wants BGR
    labels = np.zeros(crop.shape[:2], np.uint8)
    rect = (bx1 - cx1, by1 - cy1, bx2 - bx1, by2 - by1)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(crop, labels, rect, bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT)
    except cv2.error:  # e.g. a colour model without samples
        out[by1:by2, bx1:bx2] = True
        return out
    out[cy1:cy2, cx1:cx2] = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    return out


def grabcut_results(images: Sequence[Tensor], image_ids: Sequence[int], detections: Sequence[Mapping[str, Tensor]],
                    label_to_category_id: Mapping[int, int], iterations: int = 5) -> list[dict]:
    """COCO results with a GrabCut mask for every detection (boxes, labels and scores kept), for
    float [3, H, W] images in [0, 1]."""
    records = []
    for image, image_id, det in zip(images, image_ids, detections, strict=True):
        pixels = (image.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        masks = [grabcut_mask(pixels, box.tolist(), iterations) for box in det["boxes"]]
        stacked = torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0,) + pixels.shape[:2], dtype=torch.bool)
        pred = {"boxes": det["boxes"], "labels": det["labels"], "scores": det["scores"],
                "masks": stacked[:, None].float()}
        records += detections_to_coco(pred, image_id, dict(label_to_category_id))
    return records
