"""Invariants of the generated benchmark: they must hold for every image, not on average."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from instseg.config import load_params, scale_params
from instseg.data.coco_json import load_coco_gt, segmentation_to_mask
from instseg.data.dvc_hash import dir_md5, tracked_md5
from instseg.data.stats import split_statistics, subset_statistics
from instseg.data.occluded_shapes import (
    CATEGORIES,
    GENERATOR_VERSION,
    BenchmarkConfig,
    _box_iou,
    _mask_box,
    build_benchmark,
    categories_json,
    generate_scene,
    generate_scene_kind,
)
from instseg.data.occlusion import coco_occ_image_ids
from instseg.data.shapes import NON_CONVEX, SHAPE_FAMILIES, STRUCTURE, ShapeSpec, render_shape

REPO = Path(__file__).resolve().parents[1]
# both kinds of scene: crowded (overlapping placements) and sparse
CFG = BenchmarkConfig(image_size=96, split_sizes={"train": 0, "val": 40, "test": 0}, crowded_rate=0.5,
                      crowded_extra_objects=1, sparse_max_box_iou=0.15)


def _cpu_config() -> BenchmarkConfig:
    params = load_params(REPO / "params.yaml")
    return BenchmarkConfig.from_dict(scale_params(params, "cpu")["benchmark"])


@pytest.mark.parametrize("index", range(40))
def test_scene_invariants(index: int) -> None:
    image, objects, background = generate_scene(CFG, "val", index)
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert background in ("clutter", "photo")
    covered = np.zeros((96, 96), dtype=int)
    for k, obj in enumerate(objects):
        assert obj.depth == k
        assert not (obj.visible & ~obj.amodal).any(), "visible must be inside amodal"
        assert obj.visible.sum() >= CFG.min_visible_pixels
        assert obj.visible.sum() >= CFG.min_visible_fraction * obj.amodal.sum()
        front = np.zeros_like(obj.amodal)
        for j in range(k + 1, len(objects)):
            front |= objects[j].amodal
        np.testing.assert_array_equal(obj.visible, obj.amodal & ~front)
        expected = [j for j in range(k + 1, len(objects)) if (objects[j].amodal & obj.amodal).any()]
        assert obj.occluders == expected
        covered += obj.visible
    assert covered.max() <= 1, "visible masks of one image must be disjoint"


def test_generation_is_deterministic_and_seeded() -> None:
    a, objs_a, _ = generate_scene(CFG, "val", 7)
    b, objs_b, _ = generate_scene(CFG, "val", 7)
    np.testing.assert_array_equal(a, b)
    assert [o.category_id for o in objs_a] == [o.category_id for o in objs_b]
    assert [o.appearance for o in objs_a] == [o.appearance for o in objs_b]
    c, _, _ = generate_scene(BenchmarkConfig(image_size=96, seed=1), "val", 7)
    assert not np.array_equal(a, c)


def test_benchmark_is_bit_identical_across_runs_and_workers(tmp_path: Path) -> None:
    cfg = BenchmarkConfig(image_size=64, split_sizes={"train": 6, "val": 6, "test": 2}, objects_per_image=(2, 4),
                          crowded_rate=0.5, crowded_extra_objects=1)
    build_benchmark(cfg, tmp_path / "a", workers=1)
    build_benchmark(cfg, tmp_path / "b", workers=2)
    assert dir_md5(tmp_path / "a") == dir_md5(tmp_path / "b")
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["generator_version"] == GENERATOR_VERSION == 2


def test_written_annotations_are_consistent(smoke_dir: Path) -> None:
    for split in ("train", "val", "test"):
        gt = load_coco_gt(smoke_dir / "annotations" / f"{split}.json")
        images = {im["id"]: im for im in gt["images"]}
        by_id = {a["id"]: a for a in gt["annotations"]}
        for ann in gt["annotations"]:
            im = images[ann["image_id"]]
            vis = segmentation_to_mask(ann["segmentation"], im["height"], im["width"])
            amo = segmentation_to_mask(ann["amodal_segmentation"], im["height"], im["width"])
            assert ann["area"] == vis.sum() and ann["amodal_area"] == amo.sum()
            assert not (vis & ~amo).any()
            assert ann["occlusion_ratio"] == pytest.approx(1 - vis.sum() / amo.sum(), abs=1e-6)
            ys, xs = np.nonzero(vis)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            for occ_id in ann["occluder_ids"]:
                occ = by_id[occ_id]
                assert occ["image_id"] == ann["image_id"] and occ["depth"] > ann["depth"]
            assert (ann["occlusion_ratio"] > 0) == bool(ann["occluder_ids"])
            assert (smoke_dir / "images" / im["file_name"]).is_file()


def test_val_occ_is_the_coco_occ_subset_of_val(smoke_dir: Path) -> None:
    from instseg.data.occlusion import coco_occ_image_ids

    val = load_coco_gt(smoke_dir / "annotations" / "val.json")
    occ = load_coco_gt(smoke_dir / "annotations" / "val_occ.json")
    assert sorted(im["id"] for im in occ["images"]) == sorted(coco_occ_image_ids(val, 0.2))
    assert {a["image_id"] for a in occ["annotations"]} <= {im["id"] for im in occ["images"]}


def test_categories_are_shapes_with_structure_on_both_halves() -> None:
    assert len(CATEGORIES) == 10 and sorted(c.id for c in CATEGORIES) == list(range(1, 11))
    assert len({c.shape for c in CATEGORIES}) == 10, "one outline per category"
    assert {c.shape for c in CATEGORIES} == set(SHAPE_FAMILIES)
    for c in CATEGORIES:  # named by shape, never by colour or texture
        assert c.name == c.shape
        assert not {"striped", "dotted", "checker", "gradient", "red", "blue"} & set(c.name.split("_"))
    halves = {s: [c for c in CATEGORIES if c.split == s] for s in ("A", "B")}
    assert [len(h) for h in halves.values()] == [5, 5]
    for half in halves.values():  # each half: convex and non-convex, annular, armed and notched outlines
        assert {c.structure for c in half} == {"convex", "annular", "armed", "notched"}
        assert any(c.shape in NON_CONVEX for c in half) and any(c.shape not in NON_CONVEX for c in half)
    assert len(NON_CONVEX & set(SHAPE_FAMILIES)) >= len(SHAPE_FAMILIES) / 2
    records = categories_json()
    assert all(set(r) == {"id", "name", "supercategory", "shape", "split"} for r in records)
    assert all(r["supercategory"] == STRUCTURE[r["shape"]] for r in records)


def _rotation_max_iou(a: str, b: str, size: int = 96) -> float:
    """Best IoU of outline ``b`` against ``a`` over rotations and squashes (same centre and radius)."""
    ref = render_shape(ShapeSpec(a, 48, 48, 36, 0.0), size, size)
    best = 0.0
    for angle in np.linspace(0, 2 * np.pi, 72, endpoint=False):
        for aspect in (0.75, 0.875, 1.0):
            other = render_shape(ShapeSpec(b, 48, 48, 36, float(angle), aspect), size, size)
            best = max(best, (ref & other).sum() / (ref | other).sum())
    return float(best)


def test_category_outlines_are_distinct() -> None:
    """No outline matches another under any rotation or squash the generator draws."""
    for i, a in enumerate(SHAPE_FAMILIES):
        for b in SHAPE_FAMILIES[i + 1:]:
            assert _rotation_max_iou(a, b) < 0.85, (a, b)


def test_appearance_is_drawn_per_image_not_per_category() -> None:
    """Same-category instances of one image look alike; across images a category takes many looks;
    texture families are spread alike over both halves."""
    families: dict[int, set[str]] = {c.id: set() for c in CATEGORIES}
    per_half: dict[str, list[str]] = {"A": [], "B": []}
    half = {c.id: c.split for c in CATEGORIES}
    same_category_pairs = 0
    for index in range(120):
        _, objects, _ = generate_scene(CFG, "val", index)
        for k, obj in enumerate(objects):
            families[obj.category_id].add(obj.appearance.family)
            if obj.category_id not in {o.category_id for o in objects[:k]}:  # one draw per image and category
                per_half[half[obj.category_id]].append(obj.appearance.family)
            for other in objects[k + 1:]:
                if other.category_id == obj.category_id:
                    same_category_pairs += 1
                    assert other.appearance.family == obj.appearance.family
                    hue_gap = abs(other.appearance.hue - obj.appearance.hue)
                    assert min(hue_gap, 1 - hue_gap) <= 0.04
    assert same_category_pairs > 20
    assert all(len(f) == 4 for f in families.values()), families
    for family in ("stripes", "dots", "checker", "gradient"):
        shares = [per_half[h].count(family) / len(per_half[h]) for h in ("A", "B")]
        assert abs(shares[0] - shares[1]) < 0.12, (family, shares)


def test_sparse_scenes_keep_boxes_apart() -> None:
    kinds = []
    for index in range(40):
        _, objects, _, kind = generate_scene_kind(CFG, "val", index)
        kinds.append(kind)
        if kind == "sparse":
            boxes = [_mask_box(o.amodal) for o in objects]
            assert all(_box_iou(p, q) <= CFG.sparse_max_box_iou for i, p in enumerate(boxes) for q in boxes[i + 1:])
    assert 0 < kinds.count("crowded") < len(kinds)
    assert BenchmarkConfig().crowded_rate == 1.0  # the default keeps every image crowded (version 1's scenes)


def test_val_occ_is_a_hard_minority_at_the_cpu_scale(tmp_path: Path) -> None:
    """As COCO-OCC within COCO val (20%): 15-30% of val, more occluded and more crowded than val.
    Measured on the first 160 val images of the cpu configuration (the benchmark's own images)."""
    cfg = dataclasses.replace(_cpu_config(), split_sizes={"train": 0, "val": 160, "test": 0})
    build_benchmark(cfg, tmp_path, workers=2)
    val = load_coco_gt(tmp_path / "annotations" / "val.json")
    occ = load_coco_gt(tmp_path / "annotations" / "val_occ.json")
    rows = {r["split"]: r for r in subset_statistics(val, occ)}
    assert 0.15 <= rows["val_occ"]["share_of_val"] <= 0.30
    assert rows["val_occ"]["occlusion_ratio_mean"] > 2 * rows["val"]["occlusion_ratio_mean"]
    assert rows["val_occ"]["instances_per_image"] > rows["val"]["instances_per_image"]
    stats = split_statistics(val, cfg.coco_occ_threshold)
    assert abs(stats["crowded_share"] - cfg.crowded_rate) < 0.1
    sparse = {im["id"] for im in val["images"] if im["scene"] == "sparse"}
    assert not sparse & set(coco_occ_image_ids(val, cfg.coco_occ_threshold)), "sparse images stay out of val_occ"


def test_non_convex_shapes_can_be_split_by_an_occluder() -> None:
    import cv2

    bar = np.zeros((96, 96), dtype=bool)
    bar[:, 44:52] = True
    for family, angle in (("ring", 0.0), ("c_shape", np.pi / 2), ("chevron", np.pi / 2), ("cross", np.pi / 4)):
        mask = render_shape(ShapeSpec(family, 48, 48, 30, angle), 96, 96)
        pieces = cv2.connectedComponents((mask & ~bar).astype(np.uint8), connectivity=8)[0] - 1
        assert pieces >= 2, family
    for family in SHAPE_FAMILIES:
        assert render_shape(ShapeSpec(family, 48, 48, 20, 0.3), 96, 96).sum() > 300
    with pytest.raises(ValueError, match="unknown shape family"):
        render_shape(ShapeSpec("blob", 1, 1, 1, 0), 8, 8)


def test_cpu_benchmark_matches_data_dvc(tmp_path: Path) -> None:
    """Regenerating the tracked benchmark must give the bytes recorded in data.dvc."""
    params = load_params(REPO / "params.yaml")
    cfg = BenchmarkConfig.from_dict(scale_params(params, params["data"]["scale"])["benchmark"])
    build_benchmark(cfg, tmp_path / "occluded_shapes", workers=2)
    _, expected = tracked_md5(REPO / "data.dvc")
    assert dir_md5(tmp_path / "occluded_shapes") == expected


def test_meta_records_the_config(smoke_dir: Path) -> None:
    meta = json.loads((smoke_dir / "meta.json").read_text())
    assert meta["config"]["image_size"] == 64
    assert BenchmarkConfig.from_dict(meta["config"]).image_size == 64
    with pytest.raises(ValueError, match="unknown benchmark parameters"):
        BenchmarkConfig.from_dict({"image_sise": 3})
