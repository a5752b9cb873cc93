"""Invariants of the generated benchmark: they must hold for every image, not on average."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from instseg.config import load_params, scale_params
from instseg.data.coco_json import load_coco_gt, segmentation_to_mask
from instseg.data.dvc_hash import dir_md5, tracked_md5
from instseg.data.occluded_shapes import CATEGORIES, BenchmarkConfig, build_benchmark, generate_scene
from instseg.data.shapes import NON_CONVEX, SHAPE_FAMILIES, ShapeSpec, render_shape

REPO = Path(__file__).resolve().parents[1]
CFG = BenchmarkConfig(image_size=96, split_sizes={"train": 0, "val": 40, "test": 0})


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
    c, _, _ = generate_scene(BenchmarkConfig(image_size=96, seed=1), "val", 7)
    assert not np.array_equal(a, c)


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


def test_categories_share_families_across_the_split() -> None:
    assert len(CATEGORIES) >= 8
    assert len({(c.shape, c.appearance) for c in CATEGORIES}) == len(CATEGORIES)
    halves = {s: [c for c in CATEGORIES if c.split == s] for s in ("A", "B")}
    shared_shapes = {c.shape for c in halves["A"]} & {c.shape for c in halves["B"]}
    shared_looks = {c.appearance for c in halves["A"]} & {c.appearance for c in halves["B"]}
    assert len(shared_shapes) >= 3 and len(shared_looks) >= 3
    assert {c.shape for c in CATEGORIES} & NON_CONVEX == NON_CONVEX


def test_non_convex_shapes_can_be_split_by_an_occluder() -> None:
    import cv2

    ring = render_shape(ShapeSpec("ring", 48, 48, 30, 0.0), 96, 96)
    bar = np.zeros_like(ring)
    bar[:, 44:52] = True
    pieces = cv2.connectedComponents((ring & ~bar).astype(np.uint8), connectivity=8)[0] - 1
    assert pieces == 2
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
