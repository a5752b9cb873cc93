"""AP per category and AP per occlusion-ratio bin, computed by the same COCO evaluator.

Per category: COCO's precision array at area "all" and maxDets 100, averaged over recall and IoU
thresholds for AP (over recall at IoU 0.5 for AP50), skipping undefined (-1) entries. This is
the per-class AP that detectron2 reports; a category without ground truth gets ``None``.

Per occlusion bin (the OVIS idea of scoring each occlusion level as COCO scores each object
size). COCO ignores ground truth whose ``area`` lies outside the evaluated area range, ignores
detections matched to ignored ground truth, and counts unmatched detections as false positives
only when their own area lies inside the range. For each bin ``[lo, hi]`` one evaluation runs
with that single area range, where

* every non-crowd ground truth's area is replaced by its ``occlusion_ratio``, so objects outside
  the bin are ignored (a detection of one is neither a true nor a false positive),
* every detection's area is replaced by ``lo``, a value inside the bin, so a detection that
  matches nothing counts as a false positive in every bin.

Matching is COCO's: a detection prefers a ground truth of the bin over an ignored one. A bin is
``lo <= ratio < hi``, except the bin with the largest ``hi``, which is ``lo <= ratio <= hi`` (so
the default bins cover [0, 1] exactly and a fully occluded object, ratio 1, is counted). The
half-open end is exact: the range's upper bound is the largest float below ``hi``. Crowd regions
keep COCO's meaning (ignored, absorbing detections) and need no ratio. A bin without ground truth
has AP ``None``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from instseg.errors import InputError
from instseg.evaluation.backends import run_coco_eval
from instseg.evaluation.coco_eval import mean_precision
from instseg.evaluation.inputs import GroundTruth, Prepared, Results, gt_record, prepare

DEFAULT_BINS = ((0.0, 0.1), (0.1, 0.3), (0.3, 0.5), (0.5, 1.0))
AREA_ALL, MAX_DETS_100 = 0, -1  # indices into the precision array


def _iou_index(iou_thrs: np.ndarray, iou: float) -> int:
    return int(np.flatnonzero(np.isclose(iou_thrs, iou))[0])


def per_category_ap(gt: GroundTruth, results: Results, iou_type: str = "segm", *, amodal: bool = False,
                    image_ids: Iterable | None = None, backend: str = "faster") -> dict[str | int, dict]:
    """``{category name (id when unnamed): {"AP": percent, "AP50": percent}}``; same options as ``evaluate``."""
    prepared = prepare(gt, results, iou_type, amodal, image_ids)
    run = run_coco_eval(prepared.gt, prepared.results, iou_type, backend, image_ids=prepared.image_ids)
    names = {cat["id"]: cat.get("name", cat["id"]) for cat in prepared.gt["categories"]}
    i50 = _iou_index(run.iou_thrs, 0.5)
    table = {}
    for k, cat_id in enumerate(run.cat_ids):
        precision = run.precision[:, :, k, AREA_ALL, MAX_DETS_100]
        table[names[cat_id]] = {"AP": mean_precision(precision), "AP50": mean_precision(precision[i50])}
    return table


def _check_bins(bins: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    checked = [(float(lo), float(hi)) for lo, hi in bins]
    if not checked or any(not 0.0 <= lo < hi for lo, hi in checked):
        raise ValueError(f"bins must be a non-empty list of (lo, hi) with 0 <= lo < hi, got {bins!r}")
    return checked


def _occlusion_ratios(prepared: Prepared) -> list[float | None]:
    """Ratio of each annotation (None for crowd regions), aligned with ``prepared.gt``'s annotations."""
    ratios = []
    for i, ann in enumerate(prepared.source["annotations"]):
        if ann.get("iscrowd", 0):
            ratios.append(None)
            continue
        ratio = ann.get("occlusion_ratio")
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= 1.0:
            raise InputError(f"occlusion_ratio must be a number in [0, 1], got {ratio!r} "
                             "(AP by occlusion needs it on every non-crowd annotation)",
                             prepared.gt_path, gt_record(i, ann))
        ratios.append(float(ratio))
    return ratios


def _upper_bound(hi: float, closed: bool) -> float:
    """The largest ratio in the bin: ``hi`` itself, or the largest float below it for a half-open bin."""
    return hi if closed else float(np.nextafter(hi, -np.inf))


def _bin_row(prepared: Prepared, ratios: list[float | None], lo: float, hi: float, upper: float,
             iou_type: str, backend: str) -> dict:
    gt = dict(prepared.gt, annotations=[dict(ann, area=lo if ratio is None else ratio)
                                        for ann, ratio in zip(prepared.gt["annotations"], ratios, strict=True)])
    run = run_coco_eval(gt, prepared.results, iou_type, backend, image_ids=prepared.image_ids,
                        area_range=(lo, upper), dt_area=lo)
    images = set(run.img_ids)
    n_gt = sum(1 for ann, r in zip(gt["annotations"], ratios, strict=True)
               if r is not None and lo <= r <= upper and ann["image_id"] in images)
    precision = run.precision[:, :, :, 0, MAX_DETS_100]  # area index 0: the single (bin) range
    return {"bin": [lo, hi], "n_gt": n_gt, "AP": mean_precision(precision),
            "AP50": mean_precision(precision[_iou_index(run.iou_thrs, 0.5)]),
            "AP75": mean_precision(precision[_iou_index(run.iou_thrs, 0.75)])}


def ap_by_occlusion(gt: GroundTruth, results: Results, bins: Sequence[tuple[float, float]] = DEFAULT_BINS,
                    iou_type: str = "segm", *, amodal: bool = False, image_ids: Iterable | None = None,
                    backend: str = "faster") -> list[dict]:
    """One row ``{"bin": [lo, hi], "n_gt", "AP", "AP50", "AP75"}`` (percent) per occlusion-ratio bin.

    The protocol and the bin boundaries are described in the module docstring; ``n_gt`` counts the
    non-crowd ground truth of the bin on the evaluated images. ``amodal`` and ``image_ids`` mean what
    they mean in ``evaluate`` (amodal masks as ground truth, a subset of images such as COCO-OCC), so
    a caller passes them on with the other options; the bins stay the annotations' ``occlusion_ratio``.
    """
    checked = _check_bins(bins)
    prepared = prepare(gt, results, iou_type, amodal, image_ids)
    ratios = _occlusion_ratios(prepared)
    top = max(hi for _, hi in checked)
    return [_bin_row(prepared, ratios, lo, hi, _upper_bound(hi, closed=hi == top), iou_type, backend)
            for lo, hi in checked]
