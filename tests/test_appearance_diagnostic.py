"""The appearance diagnostic: colour/texture must not predict a category's A/B half, shape must.

The main test generates a few hundred instances of the cpu configuration and fails on a generator
that ties colour to the category (as version 1 did: ~99% A/B accuracy from colour); the control
test repaints the very same scenes with category-fixed colours and checks that the diagnostic
does see that leak.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from instseg.config import load_params, scale_params
from instseg.data.appearance import APPEARANCE_FAMILIES, Appearance, render_appearance
from instseg.data.appearance_diagnostic import (
    InstanceFeatures,
    appearance_verdict,
    binomial_interval,
    chance_accuracy,
    colour_texture_features,
    diagnose,
    diagnostic_rows,
    shape_features,
    split_features,
)
from instseg.data.coco_json import load_coco_gt
from instseg.data.occluded_shapes import CATEGORIES, BenchmarkConfig, generate_scene
from instseg.data.shapes import ShapeSpec, render_shape

REPO = Path(__file__).resolve().parents[1]
HALF = {c.id: c.split for c in CATEGORIES}


def _cpu_config() -> BenchmarkConfig:
    return BenchmarkConfig.from_dict(scale_params(load_params(REPO / "params.yaml"), "cpu")["benchmark"])


def _category_coupled(category_id: int, rng: np.random.Generator) -> Appearance:
    """Version 1's appearance model: a fixed texture family and hue (± 0.03) per category."""
    return Appearance(APPEARANCE_FAMILIES[category_id % 4], (0.37 * category_id + rng.uniform(-0.03, 0.03)) % 1.0,
                      float(rng.uniform(0.55, 0.9)), float(rng.uniform(0.65, 0.95)), float(rng.uniform(0.35, 0.55)),
                      float(rng.uniform(5, 9)), float(rng.uniform(0, np.pi)))


def _features(cfg: BenchmarkConfig, split: str, n: int, coupled: bool = False) -> InstanceFeatures:
    """Instance features straight from generated scenes (PNG is lossless: the same pixels as on disk).
    ``coupled`` repaints every object with a category-tied appearance over the same background."""
    colour, shape, cats, ids = [], [], [], []
    rng = np.random.default_rng(123)
    for index in range(n):
        image, objects, _ = generate_scene(cfg, split, index)
        if coupled:
            painted = image.astype(np.float32) / 255.0
            for obj in objects:
                texture = render_appearance(_category_coupled(obj.category_id, rng), *image.shape[:2])
                painted[obj.amodal] = texture[obj.amodal]
            image = np.round(painted * 255).astype(np.uint8)
        for obj in objects:
            if obj.visible.sum() >= 16:
                colour.append(colour_texture_features(image, obj.visible))
                shape.append(shape_features(obj.amodal))
                cats.append(obj.category_id)
                ids.append(index)
    return InstanceFeatures(np.stack(colour), np.stack(shape), np.array(cats),
                            np.array([HALF[c] for c in cats]), np.array(ids))


@pytest.fixture(scope="module")
def small_set() -> tuple[InstanceFeatures, InstanceFeatures]:
    """~400 train and ~250 val instances of the cpu configuration (its own first images)."""
    cfg = _cpu_config()
    return _features(cfg, "train", 100), _features(cfg, "val", 60)


def test_colour_does_not_predict_the_half_but_shape_does(small_set) -> None:
    train, val = small_set
    assert len(train) >= 300 and len(val) >= 200
    rows = {(r["features"], r["target"]): r for r in diagnostic_rows(train, val)}
    colour, shape = rows[("colour_texture", "half")], rows[("shape", "half")]
    assert abs(colour["chance"] - 0.5) < 0.1
    assert colour["accuracy"] <= 0.60, colour  # chance + a small margin (version 1: ~0.99)
    assert colour["ci_low"] <= colour["chance"] + 0.02, "colour must be statistically at chance"
    assert rows[("colour_texture", "category")]["accuracy"] <= 0.2
    assert shape["accuracy"] >= 0.85, shape  # version 1 (shapes shared by both halves): ~0.6
    assert rows[("shape", "category")]["accuracy"] >= 0.85
    verdict = appearance_verdict(rows.values())
    assert verdict["colour_at_chance"] and not verdict["colour_leaks"] and verdict["shape_separates"]
    assert "differ in shape, not in colour" in verdict["text"]


def test_the_diagnostic_sees_colour_tied_to_the_category() -> None:
    """Positive control: the same scenes with version 1's category-tied colours."""
    cfg = _cpu_config()
    train, val = _features(cfg, "train", 60, coupled=True), _features(cfg, "val", 30, coupled=True)
    rows = diagnostic_rows(train, val, kinds=("colour_texture",), targets=("half",))
    assert rows[0]["accuracy"] >= 0.9, rows[0]
    shape_rows = diagnostic_rows(train, val, kinds=("shape",), targets=("half",))
    verdict = appearance_verdict(rows + shape_rows)
    assert not verdict["colour_at_chance"] and verdict["colour_leaks"]
    assert "colour still carries the category" in verdict["text"]


def test_colour_features_read_only_the_visible_pixels() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    mask = render_shape(ShapeSpec("disc", 32, 32, 14, 0.0), 64, 64)
    other = image.copy()
    other[~mask] = 0
    np.testing.assert_allclose(colour_texture_features(image, mask), colour_texture_features(other, mask))
    with pytest.raises(ValueError, match="empty"):
        colour_texture_features(image, np.zeros((64, 64), bool))


def test_shape_features_are_about_the_outline_not_its_pose() -> None:
    """Turning, moving and rescaling an outline keeps its structural descriptors."""
    for family in ("star", "four_point_star", "cross", "ring", "chevron"):
        a = shape_features(render_shape(ShapeSpec(family, 40, 40, 30, 0.0), 96, 96))
        b = shape_features(render_shape(ShapeSpec(family, 60, 50, 24, 1.1), 96, 96))
        assert abs(a[7] - b[7]) < 0.05, family  # solidity
        assert a[9] == b[9] and a[13] == b[13], family  # Euler number, deep concavities
        assert np.argmax(a[15:]) == np.argmax(b[15:]), family  # dominant outline harmonic
        np.testing.assert_allclose(a[:7], b[:7], atol=0.3, err_msg=family)  # log |Hu moments|
    ring = shape_features(render_shape(ShapeSpec("ring", 48, 48, 30, 0.0), 96, 96))
    disc = shape_features(render_shape(ShapeSpec("disc", 48, 48, 30, 0.0), 96, 96))
    star = shape_features(render_shape(ShapeSpec("star", 48, 48, 30, 0.0), 96, 96))
    assert ring[9] == 0 and disc[9] == 1  # the ring's hole
    assert star[13] == 5 and np.argmax(star[15:]) == 4  # five arms, fifth harmonic


def test_binomial_interval_and_chance() -> None:
    low, high = binomial_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)
    assert binomial_interval(0, 20)[0] == 0.0 and binomial_interval(20, 20)[1] == 1.0
    assert binomial_interval(0, 0) == (0.0, 1.0)
    assert chance_accuracy(np.array(["A", "A", "B"]), np.array(["A", "B", "B", "B"])) == 0.25


def test_split_features_on_a_written_benchmark(smoke_dir: Path) -> None:
    train = load_coco_gt(smoke_dir / "annotations" / "train.json")
    val = load_coco_gt(smoke_dir / "annotations" / "val.json")
    feats = split_features(val, smoke_dir / "images")
    expected = [a for a in val["annotations"] if a["area"] >= 16]
    assert len(feats) == len(expected) and feats.shape.shape[0] == feats.colour_texture.shape[0]
    assert list(feats.category_ids) == [a["category_id"] for a in expected]
    assert set(feats.halves) <= {"A", "B"}
    rows = diagnose(train, val, smoke_dir / "images", max_train_images=20)
    assert [(r["features"], r["target"]) for r in rows] == [("colour_texture", "half"), ("colour_texture", "category"),
                                                            ("shape", "half"), ("shape", "category")]
    assert all(r["ci_low"] <= r["accuracy"] <= r["ci_high"] for r in rows)
    with pytest.raises(ValueError, match="unknown target"):
        feats.labels("colour")
