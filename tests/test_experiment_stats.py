"""Seed summaries, per-instance mask IoU and the paired bootstrap, on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from instseg.data.coco_json import mask_to_rle
from instseg.experiments.stats import bin_quality, instance_ious, per_instance_iou, summarize


def test_summarize_gives_mean_and_sample_std_per_group_in_row_order() -> None:
    df = pd.DataFrame({"variant": ["b", "b", "a", "a", "c"], "seed": [0, 1, 0, 1, 0],
                       "AP": [1.0, 3.0, 10.0, 10.0, 5.0], "AP50": [2.0, 4.0, 0.0, 6.0, 7.0]})
    out = summarize(df, "variant", ["AP", "AP50"])
    assert list(out.index) == ["b", "a", "c"]
    assert list(out.columns) == ["AP_mean", "AP_std", "AP50_mean", "AP50_std", "n"]
    assert out.loc["b", "AP_mean"] == 2.0 and out.loc["b", "AP_std"] == pytest.approx(math.sqrt(2))
    assert out.loc["a", "AP_std"] == 0.0 and out.loc["a", "AP50_std"] == pytest.approx(math.sqrt(18))
    assert math.isnan(out.loc["c", "AP_std"]) and list(out["n"]) == [2, 2, 1]


def _rect(y0: int, y1: int, x0: int, x1: int, size: int = 10) -> dict:
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask_to_rle(mask)


def test_per_instance_iou_takes_the_best_prediction_of_the_same_image_and_category() -> None:
    gt = {"images": [{"id": 1, "height": 10, "width": 10}, {"id": 2, "height": 10, "width": 10}],
          "categories": [{"id": 1}, {"id": 2}],
          "annotations": [
              {"id": 11, "image_id": 1, "category_id": 1, "segmentation": _rect(0, 4, 0, 4)},  # 16 px
              {"id": 12, "image_id": 1, "category_id": 1, "segmentation": _rect(5, 9, 5, 9)},  # 16 px
              {"id": 13, "image_id": 1, "category_id": 2, "segmentation": _rect(0, 4, 5, 9)},
              {"id": 14, "image_id": 1, "category_id": 1, "iscrowd": 1, "segmentation": _rect(0, 10, 0, 10)},
              {"id": 21, "image_id": 2, "category_id": 1, "segmentation": _rect(0, 2, 0, 2)},
          ]}
    results = [
        {"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": _rect(0, 4, 0, 4)},  # 11: IoU 1
        {"image_id": 1, "category_id": 1, "score": 0.1, "segmentation": _rect(5, 9, 5, 7)},  # 12: 8/16
        {"image_id": 1, "category_id": 1, "score": 0.8, "segmentation": _rect(5, 9, 5, 6)},  # 12: 4/16
        {"image_id": 1, "category_id": 1, "score": 0.5, "segmentation": _rect(0, 4, 5, 9)},  # wrong category for 13
        {"image_id": 2, "category_id": 1, "score": 0.5, "segmentation": _rect(1, 3, 0, 2)},  # 21: 2/6
    ]
    iou = per_instance_iou(gt, results)
    assert list(iou.index) == [11, 12, 13, 21]
    assert iou.tolist() == pytest.approx([1.0, 0.5, 0.0, 1 / 3])


def test_per_instance_iou_amodal_reads_amodal_segmentation() -> None:
    gt = {"images": [{"id": 1, "height": 10, "width": 10}], "categories": [{"id": 1}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": _rect(0, 2, 0, 4),
                           "amodal_segmentation": _rect(0, 4, 0, 4)}]}
    results = [{"image_id": 1, "category_id": 1, "score": 1.0, "segmentation": _rect(0, 4, 0, 4)}]
    assert per_instance_iou(gt, results).tolist() == [0.5]
    assert per_instance_iou(gt, results, amodal=True).tolist() == [1.0]


def test_instance_ious_restricts_to_images_and_categories_one_column_per_seed() -> None:
    gt = {"images": [{"id": 1, "height": 10, "width": 10}, {"id": 2, "height": 10, "width": 10}],
          "categories": [{"id": 1}, {"id": 2}],
          "annotations": [{"id": 11, "image_id": 1, "category_id": 1, "segmentation": _rect(0, 4, 0, 4)},
                          {"id": 12, "image_id": 1, "category_id": 2, "segmentation": _rect(5, 9, 5, 9)},
                          {"id": 21, "image_id": 2, "category_id": 1, "segmentation": _rect(0, 2, 0, 2)}]}
    perfect = [{"image_id": 1, "category_id": 1, "score": 1.0, "segmentation": _rect(0, 4, 0, 4)},
               {"image_id": 1, "category_id": 2, "score": 1.0, "segmentation": _rect(5, 9, 5, 9)}]
    half = [{"image_id": 1, "category_id": 1, "score": 1.0, "segmentation": _rect(0, 2, 0, 4)}]
    table = instance_ious(gt, {0: perfect, 1: half}, image_ids=[1], category_ids=[1])
    assert list(table.index) == [11] and list(table.columns) == [0, 1]
    assert table.loc[11].tolist() == [1.0, 0.5]


def test_bin_quality_counts_each_bins_instances_alone() -> None:
    gt = {"annotations": [{"id": 1, "occlusion_ratio": 0.0}, {"id": 2, "occlusion_ratio": 0.05},
                          {"id": 3, "occlusion_ratio": 0.6}, {"id": 4, "occlusion_ratio": 1.0}]}
    ious = pd.DataFrame({0: [0.9, 0.4, 0.7, 0.0], 1: [0.8, 0.6, 0.5, 0.0]}, index=[1, 2, 3, 4])
    table = bin_quality(gt, ious, [(0.0, 0.1), (0.1, 0.5), (0.5, 1.0)])
    assert table["instances"].tolist() == [2, 0, 2]
    # bin 0: seed 0 matches 1 of 2, seed 1 matches 2 of 2 -> recall 0.75; matched IoU: (0.9) and (0.8, 0.6)
    assert table.loc[0, "recall"] == pytest.approx(0.75)
    assert table.loc[0, "matched_mean_iou"] == pytest.approx((0.9 + 0.7) / 2)
    assert math.isnan(table.loc[1, "recall"])
    # the fully occluded instance (ratio 1.0) falls in the closed last bin
    assert table.loc[2, "recall"] == pytest.approx(0.5) and table.loc[2, "matched_mean_iou"] == pytest.approx(0.6)
