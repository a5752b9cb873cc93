"""Running a detector over a dataset and writing COCO results (what ``instseg predict`` does)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from instseg.data.coco_json import mask_to_rle

MAP_KEYS = ("masks", "occluder_masks", "occludee_contours", "occluder_contours")


@torch.no_grad()
def predict_batches(model: nn.Module, images: Sequence[torch.Tensor], batch_size: int = 8,
                    device: torch.device | str = "cpu") -> Iterator[dict[str, torch.Tensor]]:
    """Detections of each image, in order, moved to the CPU."""
    model.eval()
    for start in range(0, len(images), batch_size):
        batch = [img.to(device) for img in images[start:start + batch_size]]
        for pred in model(batch):
            yield {k: v.cpu() for k, v in pred.items()}


def detections_to_coco(pred: dict[str, torch.Tensor], image_id: int, label_to_category_id: dict[int, int],
                       mask_threshold: float = 0.5, extra_maps: bool = False) -> list[dict]:
    """COCO result records (``bbox`` xywh, RLE ``segmentation``) for one image's detections.

    With ``extra_maps`` the bilayer outputs are written too, as RLE under their own keys
    (``occluder_masks`` -> ``occluder_segmentation`` ...), which COCO tools ignore.
    """
    records = []
    boxes = pred["boxes"].numpy()
    masks = (pred["masks"][:, 0] >= mask_threshold).numpy() if "masks" in pred else None
    for k in range(len(boxes)):
        x1, y1, x2, y2 = (float(v) for v in boxes[k])
        record = {"image_id": int(image_id), "category_id": int(label_to_category_id[int(pred["labels"][k])]),
                  "score": float(pred["scores"][k]), "bbox": [x1, y1, max(x2 - x1, 1e-3), max(y2 - y1, 1e-3)]}
        if masks is not None:
            record["segmentation"] = mask_to_rle(masks[k].astype(np.uint8))
        if extra_maps:
            for key in MAP_KEYS[1:]:
                if key in pred:
                    name = key.replace("_masks", "_segmentation").replace("_contours", "_contour")
                    record[name] = mask_to_rle((pred[key][k, 0] >= mask_threshold).numpy().astype(np.uint8))
        records.append(record)
    return records
