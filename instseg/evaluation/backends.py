"""Run one COCO evaluation with faster-coco-eval (default) or pycocotools (the reference).

Both backends get the same prepared copies (see ``inputs``) and the same parameters, and both
return the accumulated ``precision`` array and summary stats, so callers never touch a backend object.
pycocotools prints progress to stdout; it is silenced here so notebooks and the CLI stay readable.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np

BACKENDS = ("faster", "pycocotools")


@dataclass(frozen=True)
class EvalRun:
    """What one evaluation produced. Fractions, not percent; -1 marks an undefined value."""

    precision: np.ndarray  # [T iou thresholds, R recall thresholds, K categories, A area ranges, M maxDets]
    stats: np.ndarray | None  # the 12 COCO summary numbers; None when custom area ranges were used
    iou_thrs: np.ndarray
    cat_ids: list
    img_ids: list


def _silent(*_args, **_kwargs) -> None:
    """print_function for faster-coco-eval, which otherwise logs every step."""


def _classes(backend: str) -> tuple[type, type]:
    if backend == "faster":
        from faster_coco_eval import COCO, COCOeval_faster
        return COCO, COCOeval_faster
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
        return COCO, COCOeval
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _coco(coco_cls: type, dataset: dict):
    """Index an in-memory dataset (pycocotools' constructor only reads files)."""
    coco = coco_cls()
    coco.dataset = dataset
    coco.createIndex()
    return coco


def _fill_like_load_res(results: list[dict]) -> None:
    """Add what ``loadRes`` adds (area, bbox, id, iscrowd), deciding by the first result as it does.

    For faster-coco-eval only: its ``loadRes`` calls the mask API once per detection, a third of
    the whole evaluation time on the benchmark; one call for all masks gives the same numbers.
    """
    from faster_coco_eval.core import mask as fast_mask

    if results and "bbox" in results[0]:
        for det in results:
            x, y, w, h = det["bbox"]
            det.setdefault("segmentation", [[x, y, x, y + h, x + w, y + h, x + w, y]])
            det["area"] = w * h
    elif results:
        masks = [det["segmentation"] for det in results]
        for det, area, box in zip(results, fast_mask.area(masks), fast_mask.toBbox(masks), strict=True):
            det["area"] = area
            det.setdefault("bbox", box)
    for i, det in enumerate(results, start=1):
        det["id"], det["iscrowd"] = i, 0


def _detections(backend: str, coco_cls: type, coco_gt, gt: dict, results: list[dict]):
    """The results' COCO object; pycocotools' ``loadRes`` cannot take an empty list (it reads results[0])."""
    if backend == "pycocotools" and results:
        return coco_gt.loadRes(results)
    if backend == "faster":
        _fill_like_load_res(results)
    return _coco(coco_cls, {"images": gt["images"], "categories": gt["categories"], "annotations": results})


def _evaluator(backend: str, eval_cls: type, coco_gt, coco_dt, iou_type: str):
    if backend == "faster":
        # One thread for the mask IoUs: each (image, category) block holds a few masks, and handing
        # thousands of such blocks to a thread pool cost more than it saved (benchmarks/bench_eval.py).
        return eval_cls(coco_gt, coco_dt, iou_type, print_function=_silent, rle_iou_max_workers=1)
    return eval_cls(coco_gt, coco_dt, iou_type)


def run_coco_eval(gt: dict, results: list[dict], iou_type: str, backend: str = "faster", *,
                  image_ids: list | None = None, category_ids: list | None = None, area_range: tuple[float, float] | None = None,
                  dt_area: float | None = None) -> EvalRun:
    """Evaluate prepared input (``inputs.prepare``); the evaluators write into per-run copies.

    ``image_ids`` and ``category_ids`` restrict the evaluation (params.imgIds, params.catIds). ``area_range`` replaces the four COCO
    area ranges by that single one (no summary stats then), and ``dt_area`` overrides every
    detection's area after ``loadRes`` computed it: together they let the occlusion-bin breakdown
    use areas as a stand-in for occlusion ratios.
    """
    coco_cls, eval_cls = _classes(backend)
    gt = dict(gt, annotations=[dict(ann) for ann in gt["annotations"]])
    results = [dict(det) for det in results]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = _coco(coco_cls, gt)
        coco_dt = _detections(backend, coco_cls, coco_gt, gt, results)
        if dt_area is not None:
            for det in coco_dt.dataset["annotations"]:
                det["area"] = dt_area
        ev = _evaluator(backend, eval_cls, coco_gt, coco_dt, iou_type)
        if image_ids is not None:
            ev.params.imgIds = list(image_ids)
        if category_ids is not None:
            ev.params.catIds = list(category_ids)
        if area_range is not None:
            ev.params.areaRng = [list(area_range)]
            ev.params.areaRngLbl = ["range"]
        ev.evaluate()
        ev.accumulate()
        if area_range is None:
            ev.summarize()
    p = ev.params
    return EvalRun(precision=np.asarray(ev.eval["precision"]),
                   stats=None if area_range is not None else np.asarray(ev.stats, dtype=float),
                   iou_thrs=np.asarray(p.iouThrs), cat_ids=list(p.catIds), img_ids=list(p.imgIds))
