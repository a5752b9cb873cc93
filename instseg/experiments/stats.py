"""Statistics for head comparisons at CPU scale, where effects are about as large as the spread
between seeds (DESIGN, "Effects are small at CPU scale"): the mean and spread over seeds, and a
per-instance IoU tables of heads scored on the same detections (what the paired verdicts of
:mod:`instseg.experiments.comparison` take), and per-bin recall and matched IoU."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from pycocotools import mask as mask_utils

from instseg.data.coco_json import segmentation_to_rle


def summarize(df: pd.DataFrame, group: str | Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """``{metric}_mean`` and ``{metric}_std`` (sample std, ddof=1: NaN for a single seed) of each
    metric over the rows (seeds) of each group, and ``n``, the number of rows; groups keep their
    first-seen order so a table keeps its row order."""
    keys = [group] if isinstance(group, str) else list(group)
    grouped = df.groupby(keys, sort=False)
    out = grouped[list(metrics)].agg(["mean", "std"])
    out.columns = [f"{metric}_{stat}" for metric, stat in out.columns]
    out["n"] = grouped.size()
    return out


def _rle(segmentation: list | dict, image: dict) -> dict:
    """Compressed RLE with bytes counts, as pycocotools' ``iou`` reads it."""
    rle = segmentation_to_rle(segmentation, image["height"], image["width"])
    return {"size": rle["size"], "counts": rle["counts"].encode("ascii")}


def per_instance_iou(gt: dict, results: Sequence[dict], amodal: bool = False) -> pd.Series:
    """Mask IoU of each non-crowd ground-truth instance with its best-matching prediction of the
    same image and category (0 when there is none), indexed by annotation id, in ``gt`` order.

    Scores are ignored: for two heads on the same detections this measures mask quality alone,
    instance by instance, so the two series pair up for a paired test
    (:func:`~instseg.experiments.comparison.instance_difference`). ``amodal``
    compares with ``amodal_segmentation``.
    """
    images = {img["id"]: img for img in gt["images"]}
    predictions: dict[tuple, list[dict]] = defaultdict(list)
    for det in results:
        predictions[det["image_id"], det["category_id"]].append(_rle(det["segmentation"], images[det["image_id"]]))
    key = "amodal_segmentation" if amodal else "segmentation"
    ious = {}
    for ann in gt["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        candidates = predictions.get((ann["image_id"], ann["category_id"]), [])
        if candidates:
            target = _rle(ann[key], images[ann["image_id"]])
            ious[ann["id"]] = float(np.max(mask_utils.iou(candidates, [target], [0])))
        else:
            ious[ann["id"]] = 0.0
    return pd.Series(ious, name="iou", dtype=float).rename_axis("annotation_id")


def instance_ious(gt: dict, results_by_seed: Mapping[int, Sequence[dict]], image_ids: Iterable[int] | None = None,
                  category_ids: Iterable[int] | None = None, amodal: bool = False) -> pd.DataFrame:
    """Per-instance mask IoU (:func:`per_instance_iou`) of one head, one column per seed, over the
    ground truth of ``image_ids`` / ``category_ids`` only (None: all): the table a paired
    comparison of two heads on the same detections takes (:func:`~instseg.experiments.comparison.compare`)."""
    keep_images = None if image_ids is None else set(image_ids)
    keep_categories = None if category_ids is None else set(category_ids)
    anns = [a for a in gt["annotations"]
            if (keep_images is None or a["image_id"] in keep_images)
            and (keep_categories is None or a["category_id"] in keep_categories)]
    sub = {**gt, "annotations": anns}
    images = {a["image_id"] for a in anns}
    columns = {seed: per_instance_iou(sub, [r for r in results if r["image_id"] in images], amodal)
               for seed, results in results_by_seed.items()}
    return pd.DataFrame(columns)


def bin_quality(gt: dict, ious: pd.DataFrame, bins: Sequence[tuple[float, float]], iou_threshold: float = 0.5
                ) -> pd.DataFrame:
    """Per occlusion bin: instance count, recall at ``iou_threshold`` and mean IoU of the matched
    (IoU >= threshold) instances, averaged over the seed columns of ``ious``.

    Unlike AP per bin (OVIS-style: every unmatched detection is a false positive in every bin, which
    depresses sparse bins), these look at each bin's instances alone. Bins are ``lo <= r < hi``,
    the last one closed, as in :mod:`instseg.evaluation.breakdown`.
    """
    ratio = pd.Series({a["id"]: float(a.get("occlusion_ratio", 0.0)) for a in gt["annotations"]}).reindex(ious.index)
    if ratio.isna().any():
        raise ValueError("some instances of the IoU table are not in the ground truth")
    top = max(hi for _, hi in bins)
    rows = []
    for lo, hi in bins:
        inside = (ratio >= lo) & ((ratio < hi) | ((hi == top) & (ratio <= hi)))
        sub = ious[inside.to_numpy()]
        matched = sub >= iou_threshold
        rows.append({"bin": f"{lo:g}-{hi:g}", "instances": int(inside.sum()),
                     "recall": float(matched.mean().mean()) if len(sub) else float("nan"),
                     "matched_mean_iou": float(sub.where(matched).mean().mean()) if matched.to_numpy().any()
                     else float("nan")})
    return pd.DataFrame(rows)
