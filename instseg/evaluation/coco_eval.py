"""COCO AP/AR of a results list: visible or amodal ground truth, on all images or a subset.

Numbers are percent (COCO stats x 100). A stat COCO cannot define (-1: no ground truth in that
area range or image subset) is ``None``, not NaN, so the dict goes to JSON as it is and a
missing value cannot be averaged by accident.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from instseg.evaluation.backends import run_coco_eval
from instseg.evaluation.inputs import GroundTruth, Prepared, Results, check_category_ids, prepare

STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def percent(value: float) -> float | None:
    """COCO fraction -> percent; COCO's -1 (undefined) -> None."""
    return None if value < 0 else float(value) * 100.0


def mean_precision(precision: np.ndarray) -> float | None:
    """Percent mean of a precision slice over its defined (> -1) entries, as COCO's summarize does."""
    defined = precision[precision > -1]
    return float(np.mean(defined)) * 100.0 if defined.size else None


def counts(prepared: Prepared) -> dict[str, int]:
    """Images, non-crowd ground truth and detections that the evaluation covers."""
    images = set(prepared.image_ids) if prepared.image_ids is not None else {i["id"] for i in prepared.gt["images"]}
    n_gt = sum(1 for a in prepared.gt["annotations"] if a["image_id"] in images and not a["iscrowd"])
    n_dt = sum(1 for d in prepared.results if d["image_id"] in images)
    return {"n_images": len(images), "n_gt": n_gt, "n_dt": n_dt}


def evaluate(gt: GroundTruth, results: Results, iou_type: str = "segm", *, amodal: bool = False,
             image_ids: Iterable | None = None, category_ids: Iterable | None = None,
             backend: str = "faster") -> dict:
    """COCO metrics of ``results`` against ``gt`` (dicts or JSON paths), in percent.

    ``amodal`` scores against ``amodal_segmentation``/``amodal_bbox``/``amodal_area``;
    ``image_ids`` restricts the evaluation to those images (e.g. the occluded subset);
    ``category_ids`` to those categories (e.g. the novel ones of partial supervision): AP is then
    the mean over them, as COCOeval's ``params.catIds`` does it.
    ``backend`` is ``"faster"`` (faster-coco-eval) or ``"pycocotools"``; both give the same numbers.
    Bad input raises :class:`instseg.errors.InputError`; the caller's objects are not modified.
    """
    prepared = prepare(gt, results, iou_type, amodal, image_ids)
    if category_ids is not None:
        category_ids = check_category_ids(category_ids, prepared.source, prepared.gt_path)
    run = run_coco_eval(prepared.gt, prepared.results, iou_type, backend, image_ids=prepared.image_ids,
                        category_ids=category_ids)
    metrics: dict = {key: percent(value) for key, value in zip(STAT_KEYS, run.stats, strict=True)}
    metrics.update(counts(prepared))
    metrics.update(iou_type=iou_type, amodal=amodal)
    return metrics
