"""Statistics for head comparisons at CPU scale, where effects are about as large as the spread
between seeds (DESIGN, "Effects are small at CPU scale"): the mean and spread over seeds, and a
paired per-instance bootstrap between two heads scored on the same detections."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

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
    instance by instance, so the two series pair up for :func:`paired_bootstrap`. ``amodal``
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


def paired_bootstrap(per_instance_a: Sequence[float] | pd.Series, per_instance_b: Sequence[float] | pd.Series,
                     n: int = 2000, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Mean of ``a - b`` over paired instances and its 95% percentile bootstrap interval
    (``n`` resamples of the instances with replacement, seeded). Series must share their index."""
    if isinstance(per_instance_a, pd.Series) and isinstance(per_instance_b, pd.Series):
        if not per_instance_a.index.equals(per_instance_b.index):
            raise ValueError("the two series are not over the same instances in the same order")
    a, b = np.asarray(per_instance_a, dtype=float), np.asarray(per_instance_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"need two equally long, non-empty 1-D sequences, got shapes {a.shape} and {b.shape}")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = np.array([diff[rng.integers(0, diff.size, diff.size)].mean() for _ in range(n)])
    low, high = np.percentile(means, [2.5, 97.5])
    return float(diff.mean()), (float(low), float(high))
