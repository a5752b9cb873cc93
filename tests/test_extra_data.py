"""Extra training data: the concatenated dataset and the heavy-occlusion training set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instseg.data.dataset import CocoInstanceDataset, ConcatInstanceDataset
from instseg.data.occluded_shapes import BenchmarkConfig
from instseg.data.synthetic_occlusion import extra_training_set, heavy_occlusion_config

BASE = BenchmarkConfig(image_size=64, split_sizes={"train": 6}, objects_per_image=(2, 4), radius_range=(0.14, 0.28))


def test_concat_indexes_into_the_right_part(smoke_dir: Path) -> None:
    ann = smoke_dir / "annotations"
    train = CocoInstanceDataset(ann / "train.json", smoke_dir / "images")
    val = CocoInstanceDataset(ann / "val.json", smoke_dir / "images")
    both = ConcatInstanceDataset([train, val])
    assert len(both) == len(train) + len(val)
    assert both[0][1]["image_id"] == train.image_ids[0]
    assert both[len(train)][1]["image_id"] == val.image_ids[0]
    assert both[len(both) - 1][1]["image_id"] == val.image_ids[-1]
    assert both.label_to_category_id == train.label_to_category_id and both.num_classes == train.num_classes
    assert set(both.occlusion_keys) == set(train.occlusion_keys) & set(val.occlusion_keys)
    with pytest.raises(IndexError):
        both[len(both)]


def test_concat_refuses_other_categories(smoke_dir: Path) -> None:
    ann = smoke_dir / "annotations"
    gt = json.loads((ann / "val.json").read_text())
    gt["categories"] = gt["categories"][:-1]
    gt["annotations"] = [a for a in gt["annotations"] if a["category_id"] != json.loads((ann / "val.json").read_text())["categories"][-1]["id"]]
    other = CocoInstanceDataset(gt, smoke_dir / "images")
    with pytest.raises(ValueError, match="other categories"):
        ConcatInstanceDataset([CocoInstanceDataset(ann / "val.json", smoke_dir / "images"), other])


def test_heavy_occlusion_config() -> None:
    cfg = heavy_occlusion_config(BASE, 10, 1000)
    assert cfg.split_sizes == {"train": 10, "val": 0, "test": 0} and cfg.seed == 1000
    assert cfg.overlap_rate == 1.0 and cfg.objects_per_image == (4, 6)
    control = heavy_occlusion_config(BASE, 10, 1000, overlap_rate=BASE.overlap_rate, objects_per_image=[2, 4])
    assert control.overlap_rate == BASE.overlap_rate and control.objects_per_image == (2, 4)
    with pytest.raises(ValueError, match="unknown"):
        heavy_occlusion_config(BASE, 10, 1000, overlap=1.0)


def _mean_occlusion(ds: CocoInstanceDataset) -> float:
    ratios = [a["occlusion_ratio"] for a in ds.gt["annotations"]]
    return sum(ratios) / len(ratios)


def test_extra_training_set_is_deterministic_and_more_occluded(tmp_path: Path) -> None:
    cfg = heavy_occlusion_config(BASE, 6, 1000)
    a = extra_training_set(cfg, tmp_path / "a")
    b = extra_training_set(cfg, tmp_path / "b")
    assert len(a) == 6
    assert (tmp_path / "a/annotations/train.json").read_bytes() == (tmp_path / "b/annotations/train.json").read_bytes()
    assert len(extra_training_set(cfg, tmp_path / "a")) == 6  # reused
    with pytest.raises(ValueError, match="another configuration"):
        extra_training_set(heavy_occlusion_config(BASE, 5, 1000), tmp_path / "a")
    control = heavy_occlusion_config(BASE, 6, 1000, overlap_rate=BASE.overlap_rate,
                                     same_category_overlap_rate=BASE.same_category_overlap_rate,
                                     objects_per_image=BASE.objects_per_image)
    assert _mean_occlusion(a) > _mean_occlusion(extra_training_set(control, tmp_path / "c"))
