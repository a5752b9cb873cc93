"""Turn user ground truth and results into private copies both COCO evaluators accept as they are.

Both pycocotools and faster-coco-eval write into the dicts they are given (``ignore``, ``rle``,
``area``, ``id``), so everything here is copied before any evaluator sees it. The copies are
also where the few normalisations live that keep the two backends on identical input:

* ground-truth annotation ids are renumbered 1..N: the evaluators use id 0 to mean "unmatched",
  so a dataset whose ids start at 0 would silently lose a true positive; ``iscrowd`` defaults to 0;
* ``amodal=True`` puts ``amodal_segmentation``/``amodal_bbox``/``amodal_area`` in place of the
  visible fields;
* result masks become compressed RLE (``loadRes`` computes areas only from compressed RLE), and
  when only some results carry a ``bbox`` the rest get the box of their mask (``loadRes`` decides
  by the first result whether boxes exist).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from pycocotools import mask as mask_utils

from instseg.data.coco_json import (load_coco_gt, load_coco_results, segmentation_to_rle, validate_coco_gt,
                                    validate_coco_results)
from instseg.errors import InputError

IOU_TYPES = ("segm", "bbox")
GEOMETRY = {"segm": "segmentation", "bbox": "bbox"}
AMODAL_KEYS = ("segmentation", "bbox", "area")

GroundTruth = dict | str | PathLike
Results = list | dict | str | PathLike


def load_inputs(gt: GroundTruth, results: Results, iou_type: str) -> tuple[dict, list[dict], Path]:
    """Read (if paths) and validate ground truth and results; return them and the path for messages."""
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    if isinstance(gt, dict):
        gt_path = Path("<memory>")
        gt = validate_coco_gt(gt, gt_path)
    else:
        gt_path = Path(gt)
        gt = load_coco_gt(gt_path)
    if isinstance(results, (list, dict)):
        dt_path = Path("<memory>")
        results = validate_coco_results(results, gt, dt_path, iou_type)
    else:
        dt_path = Path(results)
        results = load_coco_results(dt_path, gt, iou_type)
    return gt, results, gt_path


def gt_record(i: int, ann: dict) -> str:
    """The record name coco_json uses, so messages point at the same annotation."""
    return f"annotations[{i}] (id={ann.get('id')}, image_id={ann.get('image_id')})"


def _gt_copy(ann: dict, new_id: int, amodal: bool) -> dict:
    ann = dict(ann, id=new_id)
    ann.setdefault("iscrowd", 0)
    if amodal:
        for key in AMODAL_KEYS:
            if f"amodal_{key}" in ann:
                ann[key] = ann[f"amodal_{key}"]
            else:
                ann.pop(key, None)
    return ann


def prepare_gt(gt: dict, iou_type: str, amodal: bool, path: Path) -> dict:
    """Copy of ``gt`` with renumbered annotations, amodal fields swapped in when asked, fields checked."""
    prefix = "amodal_" if amodal else ""
    needed = (GEOMETRY[iou_type], "area")
    annotations = []
    for i, ann in enumerate(gt["annotations"]):
        new = _gt_copy(ann, i + 1, amodal)
        for key in needed:
            if key not in new:
                raise InputError(f"annotation has no '{prefix}{key}' ({'amodal ' if amodal else ''}{iou_type} "
                                 "evaluation needs it)", path, gt_record(i, ann))
        annotations.append(new)
    return {"images": [dict(img) for img in gt["images"]], "categories": [dict(c) for c in gt["categories"]],
            "annotations": annotations}


def _compressed_rle(seg: list | dict, img: dict) -> dict:
    if isinstance(seg, dict) and isinstance(seg["counts"], (str, bytes)):
        return seg
    return segmentation_to_rle(seg, img["height"], img["width"])


def _mask_bbox(rle: dict) -> list[float]:
    counts = rle["counts"].encode("ascii") if isinstance(rle["counts"], str) else rle["counts"]
    return mask_utils.toBbox({"size": rle["size"], "counts": counts}).tolist()


def prepare_results(results: list[dict], gt: dict, iou_type: str) -> list[dict]:
    """Copy of ``results`` that ``loadRes`` of either backend reads the same way."""
    results = [dict(det) for det in results]
    if iou_type != "segm":
        return results
    images = {img["id"]: img for img in gt["images"]}
    for det in results:
        det["segmentation"] = _compressed_rle(det["segmentation"], images[det["image_id"]])
    with_box = sum("bbox" in det for det in results)
    if 0 < with_box < len(results):
        for det in results:
            det.setdefault("bbox", _mask_bbox(det["segmentation"]))
    return results


def check_image_ids(image_ids: Iterable, gt: dict, path: Path) -> list:
    """Sorted unique ``image_ids``, each of which must be an image of ``gt``."""
    known = {img["id"] for img in gt["images"]}
    ids = sorted(set(image_ids))
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise InputError(f"image_ids not in the ground truth: {unknown[:10]}", path)
    return ids


def check_category_ids(category_ids: Iterable, gt: dict, path: Path) -> list:
    """Sorted unique ``category_ids``, each a category of ``gt``, at least one."""
    known = {c["id"] for c in gt["categories"]}
    ids = sorted(set(category_ids))
    unknown = [i for i in ids if i not in known]
    if unknown or not ids:
        raise InputError(f"category_ids not in the ground truth: {unknown[:10]}" if unknown
                         else "category_ids is empty", path)
    return ids


@dataclass(frozen=True)
class Prepared:
    """Validated input (``source``) and the evaluator-ready copies made from it."""

    source: dict  # the caller's ground truth, validated, untouched; annotations align with gt's
    gt: dict
    results: list[dict]
    image_ids: list | None
    gt_path: Path


def prepare(gt: GroundTruth, results: Results, iou_type: str, amodal: bool = False,
            image_ids: Iterable | None = None) -> Prepared:
    """Everything an evaluation needs from user input, checked once."""
    source, results, gt_path = load_inputs(gt, results, iou_type)
    return Prepared(source=source, gt=prepare_gt(source, iou_type, amodal, gt_path),
                    results=prepare_results(results, source, iou_type),
                    image_ids=None if image_ids is None else check_image_ids(image_ids, source, gt_path),
                    gt_path=gt_path)
