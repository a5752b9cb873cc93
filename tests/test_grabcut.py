"""Mask GrabCut from a box: recovers a clear object, degrades gracefully on degenerate boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instseg.evaluation import evaluate
from instseg.models.grabcut import grabcut_mask, grabcut_results


def _scene() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = (rng.random((64, 64, 3)) * 40 + np.array([20, 120, 60])).astype(np.uint8)  # green-ish clutter
    yy, xx = np.mgrid[:64, :64]
    disc = (yy - 30) ** 2 + (xx - 34) ** 2 <= 12**2
    image[disc] = (220, 40, 40)
    return image, disc


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def test_grabcut_recovers_a_disc_from_its_box() -> None:
    image, disc = _scene()
    mask = grabcut_mask(image, (22, 18, 47, 43))
    assert _iou(mask, disc) > 0.9
    assert _iou(np.pad(np.ones((25, 25), bool), ((18, 21), (22, 17))), disc) < 0.85  # better than the box


@pytest.mark.parametrize("box", [(10, 10, 10, 30), (5, 5, 6.5, 40), (0, 0, 64, 64), (-5, -5, 80, 80)])
def test_degenerate_and_full_frame_boxes_do_not_crash(box: tuple[float, ...]) -> None:
    image, _ = _scene()
    mask = grabcut_mask(image, box)
    assert mask.shape == (64, 64) and mask.dtype == bool


def test_bad_image_is_named() -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        grabcut_mask(np.zeros((8, 8), np.uint8), (1, 1, 5, 5))


def test_results_are_coco_and_score_well() -> None:
    image, disc = _scene()
    tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    det = {"boxes": torch.tensor([[22.0, 18.0, 47.0, 43.0]]), "labels": torch.tensor([1]), "scores": torch.tensor([0.9])}
    records = grabcut_results([tensor, tensor], [7, 8], [det, {k: v[:0] for k, v in det.items()}], {1: 3})
    assert len(records) == 1 and records[0]["category_id"] == 3 and records[0]["image_id"] == 7
    from instseg.data.coco_json import mask_to_rle

    gt = {"images": [{"id": 7, "height": 64, "width": 64, "file_name": "a.png"}],
          "categories": [{"id": 3, "name": "disc"}],
          "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "iscrowd": 0, "area": float(disc.sum()),
                           "bbox": [22, 18, 25, 25], "segmentation": mask_to_rle(disc.astype(np.uint8))}]}
    assert evaluate(gt, records, "segm")["AP50"] == pytest.approx(100.0)
