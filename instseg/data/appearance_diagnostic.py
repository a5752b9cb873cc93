"""Can colour stand in for the category? A diagnostic of a benchmark's appearance model.

A class-agnostic mask head trained on the base half of the A/B split (partial supervision) must
learn *objectness* from shape and structure; if the base categories also share colours or
textures the novel ones lack, it can learn "foreground = one of five colour signatures" instead
and fail on the novel half for a reason that has nothing to do with the method. This module
measures that leak from the data alone: per instance, colour/texture features from the image
pixels under its visible mask and shape features from its amodal mask; a logistic regression
fitted on one split's instances predicts another split's A/B half (and 10-way category). On a
benchmark without the leak, colour/texture is at chance and shape is far above it.

Everything here is a pure function of images, masks and COCO records.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from skimage.measure import regionprops

from instseg.data.coco_json import segmentation_to_mask

HUE_BINS = 12
RADIAL_ANGLES = 64
RADIAL_HARMONICS = 8
FEATURE_KINDS: tuple[str, ...] = ("colour_texture", "shape")
TARGETS: tuple[str, ...] = ("half", "category")


# ---------------------------------------------------------------------------------------------
# per-instance features


def colour_texture_features(image: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Colour and texture statistics of the pixels under ``visible`` (image HxWx3 uint8 or float).

    Mean/std RGB, a saturation-weighted hue histogram, saturation and value moments, and texture
    statistics measured on the mask's interior only (pixels whose 3x3 neighbourhood lies inside
    the mask), so that the outline itself adds no gradient energy: mean/std gradient magnitude,
    mean |Laplacian|, structure-tensor coherence (stripes are coherent, dots and checkers not)
    and the share of pixels brighter than the region's mean luminance.
    """
    mask = visible.astype(bool)
    if not mask.any():
        raise ValueError("empty visible mask")
    # work on the mask's box plus a 2-pixel margin: every filter below is 3x3 and only read on the
    # interior, so the crop gives the full image's values, at a fraction of the cost
    ys, xs = np.nonzero(mask)
    y0, x0 = max(int(ys.min()) - 2, 0), max(int(xs.min()) - 2, 0)
    y1, x1 = int(ys.max()) + 3, int(xs.max()) + 3
    mask, image = mask[y0:y1, x0:x1], image[y0:y1, x0:x1]
    img = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    pixels = img[mask]
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)[mask]  # H in degrees [0, 360), S and V in [0, 1]
    hue, sat, val = hsv[:, 0] / 360.0, hsv[:, 1], hsv[:, 2]
    hist, _ = np.histogram(hue, bins=HUE_BINS, range=(0.0, 1.0), weights=sat + 1e-6)
    hist = hist / hist.sum()
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    interior = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    if interior.sum() < 4:
        interior = mask
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    lap = cv2.Laplacian(gray, cv2.CV_32F, ksize=1)
    mag = np.hypot(gx, gy)[interior]
    jxx, jyy, jxy = (gx * gx)[interior].mean(), (gy * gy)[interior].mean(), (gx * gy)[interior].mean()
    coherence = np.sqrt((jxx - jyy) ** 2 + 4 * jxy ** 2) / max(jxx + jyy, 1e-9)
    lum = gray[mask]
    return np.concatenate([
        pixels.mean(axis=0), pixels.std(axis=0), hist,
        [sat.mean(), sat.std(), val.mean(), val.std()],
        [mag.mean(), mag.std(), np.abs(lap[interior]).mean(), coherence, (lum > lum.mean()).mean()],
    ]).astype(np.float64)


def _radial_harmonics(mask: np.ndarray, centroid: tuple[float, float]) -> np.ndarray:
    """Rotation-invariant outline signature: |FFT| of the outer radius as a function of angle."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    pts = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float64)
    cy, cx = centroid
    angle = np.arctan2(pts[:, 1] - cy, pts[:, 0] - cx)
    radius = np.hypot(pts[:, 1] - cy, pts[:, 0] - cx)
    bins = np.floor((angle + np.pi) / (2 * np.pi) * RADIAL_ANGLES).astype(int) % RADIAL_ANGLES
    profile = np.zeros(RADIAL_ANGLES)
    np.maximum.at(profile, bins, radius)
    filled = profile > 0
    if not filled.all():  # angles no contour point fell into: interpolate circularly
        idx = np.flatnonzero(filled)
        profile = np.interp(np.arange(RADIAL_ANGLES), idx, profile[idx], period=RADIAL_ANGLES)
    spectrum = np.abs(np.fft.rfft(profile))
    return spectrum[1:RADIAL_HARMONICS + 1] / max(spectrum[0], 1e-9)


def _concavities(mask: np.ndarray, scale: float) -> tuple[int, float]:
    """Number of convexity defects deeper than 10% of the object's scale, and the deepest / scale."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contour = max(contours, key=cv2.contourArea)
    if len(contour) < 4:
        return 0, 0.0
    hull = cv2.convexHull(contour, returnPoints=False)
    try:
        defects = cv2.convexityDefects(contour, np.sort(hull, axis=0))
    except cv2.error:  # self-intersecting hull order on tiny, degenerate outlines
        return 0, 0.0
    if defects is None:
        return 0, 0.0
    depth = np.asarray(defects).reshape(-1, 4)[:, 3] / 256.0 / max(scale, 1e-9)
    return int((depth > 0.1).sum()), float(depth.max())


def shape_features(amodal: np.ndarray) -> np.ndarray:
    """Scale- and rotation-invariant shape descriptors of an amodal mask.

    From ``skimage.measure.regionprops``: log |Hu moments|, solidity, extent, Euler number,
    eccentricity, hole share (filled minus own area) and compactness (perimeter² / 4π·area);
    from OpenCV: deep convexity defects (arms, notches) and the radial outline harmonics.
    """
    mask = amodal.astype(bool)
    if not mask.any():
        raise ValueError("empty amodal mask")
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = np.pad(mask[y0:y1, x0:x1], 2)  # regionprops and contours see a closed outline
    props = regionprops(crop.astype(np.uint8))[0]
    # log scale, floored: the higher Hu moments of symmetric outlines are ~0 and would otherwise
    # jump between exact zeros and rasterisation noise (~1e-6) as the outline turns
    log_hu = np.log10(np.abs(np.asarray(props.moments_hu, dtype=np.float64)) + 1e-4)
    area = float(props.area)
    scale = float(np.sqrt(area / np.pi))
    n_defects, deepest = _concavities(crop, scale)
    compactness = float(props.perimeter) ** 2 / (4 * np.pi * area)
    return np.concatenate([
        log_hu,
        [props.solidity, props.extent, props.euler_number, props.eccentricity,
         (float(props.area_filled) - area) / float(props.area_filled), compactness, n_defects, deepest],
        _radial_harmonics(crop, props.centroid),
    ]).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# features of a benchmark split


@dataclass(frozen=True)
class InstanceFeatures:
    """Per-instance feature matrices and labels of one split (rows aligned)."""

    colour_texture: np.ndarray  # (N, Dc)
    shape: np.ndarray  # (N, Ds)
    category_ids: np.ndarray  # (N,)
    halves: np.ndarray  # (N,) the category's ``split`` field ("A" / "B")
    image_ids: np.ndarray  # (N,)

    def __len__(self) -> int:
        return len(self.category_ids)

    def matrix(self, kind: str) -> np.ndarray:
        """The feature matrix of one kind ("colour_texture" or "shape")."""
        if kind not in FEATURE_KINDS:
            raise ValueError(f"unknown feature kind {kind!r}; known: {', '.join(FEATURE_KINDS)}")
        return getattr(self, kind)

    def labels(self, target: str) -> np.ndarray:
        """The labels to predict: the A/B "half" or the "category" id."""
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")
        return self.halves if target == "half" else self.category_ids


def split_features(gt: dict, image_dir: str | Path, max_images: int | None = None,
                   min_visible_pixels: int = 16) -> InstanceFeatures:
    """Features of every non-crowd instance of ``gt`` (with an ``amodal_segmentation``; the
    visible ``segmentation`` stands in where there is none), over the first ``max_images``
    images. Instances with fewer than ``min_visible_pixels`` visible pixels are skipped."""
    half = {c["id"]: str(c.get("split", "")) for c in gt["categories"]}
    by_image: dict[int, list[dict]] = {}
    for ann in gt["annotations"]:
        if not ann.get("iscrowd", 0):
            by_image.setdefault(ann["image_id"], []).append(ann)
    images = gt["images"][:max_images] if max_images is not None else gt["images"]
    colour, shape, cats, halves, ids = [], [], [], [], []
    for im in images:
        anns = by_image.get(im["id"], [])
        if not anns:
            continue
        pixels = np.asarray(Image.open(Path(image_dir) / im["file_name"]).convert("RGB"))
        for ann in anns:
            h, w = im["height"], im["width"]
            visible = segmentation_to_mask(ann["segmentation"], h, w).astype(bool)
            if visible.sum() < min_visible_pixels:
                continue
            amodal = segmentation_to_mask(ann.get("amodal_segmentation", ann["segmentation"]), h, w).astype(bool)
            colour.append(colour_texture_features(pixels, visible))
            shape.append(shape_features(amodal))
            cats.append(ann["category_id"])
            halves.append(half[ann["category_id"]])
            ids.append(im["id"])
    if not cats:
        raise ValueError("no instances to measure")
    return InstanceFeatures(np.stack(colour), np.stack(shape), np.array(cats), np.array(halves), np.array(ids))


# ---------------------------------------------------------------------------------------------
# classifier, intervals, table


def binomial_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default); sound near 0 and 1."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def chance_accuracy(train_labels: np.ndarray, test_labels: np.ndarray) -> float:
    """Accuracy of always answering the training set's most frequent label: what a classifier
    that learnt nothing from the features scores."""
    values, counts = np.unique(train_labels, return_counts=True)
    majority = values[np.argmax(counts)]
    return float(np.mean(test_labels == majority))


def fit_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, C: float = 1.0) -> np.ndarray:
    """Standardised features -> L2 logistic regression (multinomial for > 2 labels), deterministic."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(train_y)) < 2:  # one label only (a tiny sample): nothing to fit
        return np.full(len(test_x), train_y[0])
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000))
    model.fit(train_x, train_y)
    return model.predict(test_x)


def diagnostic_rows(train: InstanceFeatures, test: InstanceFeatures,
                    kinds: Sequence[str] = FEATURE_KINDS, targets: Sequence[str] = TARGETS) -> list[dict[str, Any]]:
    """One row per (features, target): test accuracy, its 95% interval, chance, instance counts."""
    rows = []
    for kind in kinds:
        for target in targets:
            truth = test.labels(target)
            pred = fit_predict(train.matrix(kind), train.labels(target), test.matrix(kind))
            correct = int(np.sum(pred == truth))
            low, high = binomial_interval(correct, len(truth))
            rows.append({"features": kind, "target": target, "accuracy": correct / len(truth),
                         "ci_low": low, "ci_high": high, "chance": chance_accuracy(train.labels(target), truth),
                         "train_instances": len(train), "test_instances": len(test)})
    return rows


def appearance_verdict(rows: Iterable[dict[str, Any]], margin: float = 0.05,
                       shape_target: float = 0.85) -> dict[str, Any]:
    """Does colour/texture predict the A/B half no better than chance + ``margin``, while shape
    predicts it at ``shape_target`` or better? Returns the accuracies, flags and a sentence.

    ``colour_at_chance``: the accuracy is at most chance + ``margin`` (the benchmark's target).
    ``colour_leaks``: even the interval's lower end is above chance, i.e. colour demonstrably
    carries the half; small samples can miss the target without leaking.
    """
    by = {(r["features"], r["target"]): r for r in rows}
    colour, shape = by[("colour_texture", "half")], by[("shape", "half")]
    colour_ok = colour["accuracy"] <= colour["chance"] + margin
    leaks = colour["ci_low"] > colour["chance"]
    shape_ok = shape["accuracy"] >= shape_target
    if colour_ok:
        colour_says = f"within chance + {margin:.0%}"
    elif leaks:
        colour_says = "above chance"
    else:
        colour_says = f"above chance + {margin:.0%} but with an interval that holds chance (a small sample)"
    if leaks:
        ending = "so colour still carries the category."
    elif shape_ok:
        ending = "so the halves differ in shape, not in colour."
    else:
        ending = "but shape does not separate the halves well either."
    text = (f"Colour/texture predicts an instance's A/B half at {colour['accuracy']:.1%} "
            f"(95% CI {colour['ci_low']:.1%}–{colour['ci_high']:.1%}; chance {colour['chance']:.1%}), {colour_says}; "
            f"shape predicts it at {shape['accuracy']:.1%} (95% CI {shape['ci_low']:.1%}–{shape['ci_high']:.1%}), "
            + ending)
    if ("colour_texture", "category") in by and ("shape", "category") in by:
        c, s = by[("colour_texture", "category")], by[("shape", "category")]
        text += (f" The category itself: colour/texture {c['accuracy']:.1%} (chance {c['chance']:.1%}), "
                 f"shape {s['accuracy']:.1%}.")
    return {"colour_texture_half_accuracy": colour["accuracy"], "shape_half_accuracy": shape["accuracy"],
            "colour_at_chance": bool(colour_ok), "colour_leaks": bool(leaks), "shape_separates": bool(shape_ok),
            "text": text}


def diagnose(train_gt: dict, test_gt: dict, image_dir: str | Path,
             max_train_images: int | None = None) -> list[dict[str, Any]]:
    """The diagnostic table of a benchmark: classifiers fitted on ``train_gt``'s instances (its
    first ``max_train_images`` images), scored on ``test_gt``'s; see :func:`diagnostic_rows`."""
    return diagnostic_rows(split_features(train_gt, image_dir, max_train_images), split_features(test_gt, image_dir))
