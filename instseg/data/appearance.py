"""Appearance families (textures) and backgrounds of the OccludedShapes benchmark.

A category is a (shape family, appearance family, hue) triple. Appearance families are shared
by several categories, so shape and appearance commonalities exist across any split of the
categories (what CPMask's partially supervised setting needs). Instances of one category get
close hues and the same texture: overlapping same-category objects look alike, the hard case.
"""

from __future__ import annotations

import colorsys
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import skimage

APPEARANCE_FAMILIES: tuple[str, ...] = ("stripes", "dots", "checker", "gradient")

# Colour photographs shipped inside the scikit-image wheel (read from disk: nothing is downloaded).
PHOTO_FILES: tuple[str, ...] = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg",
                                "motorcycle_left.png", "brick.png", "grass.png", "gravel.png")


def _rgb(hue: float, sat: float, val: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, sat, val), dtype=np.float32)


def _grid(height: int, width: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    return xx * c + yy * s, -xx * s + yy * c


def render_appearance(family: str, hue: float, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A full-frame texture (HxWx3 float32 in [0, 1]); the caller keeps the object's pixels."""
    base = _rgb(hue + rng.uniform(-0.03, 0.03), rng.uniform(0.55, 0.9), rng.uniform(0.65, 0.95))
    dark = base * rng.uniform(0.35, 0.55)
    u, v = _grid(height, width, rng.uniform(0, np.pi))
    period = rng.uniform(5.0, 9.0)
    if family == "stripes":
        weight = (np.sin(2 * np.pi * u / period) > 0).astype(np.float32)
    elif family == "dots":
        weight = 1.0 - (((u % period) - period / 2) ** 2 + ((v % period) - period / 2) ** 2
                        < (period / 3.2) ** 2).astype(np.float32)
    elif family == "checker":
        weight = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    elif family == "gradient":
        span = max(height, width)
        weight = np.clip((u - u.min()) / span, 0.0, 1.0)
    else:
        raise ValueError(f"unknown appearance family {family!r}; known: {', '.join(APPEARANCE_FAMILIES)}")
    return dark + (base - dark) * weight[..., None]


def clutter_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth colour field plus object-like distractor strokes that are not annotated."""
    low = rng.uniform(0.15, 0.75, size=(4, 4, 3)).astype(np.float32)
    img = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(3, 8))):
        colour = tuple(float(c) for c in rng.uniform(0.1, 0.9, size=3))
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p2 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        if rng.random() < 0.5:
            cv2.line(img, p1, p2, colour, thickness=int(rng.integers(1, 3)))
        else:
            axes = (int(rng.integers(2, max(3, width // 10))), int(rng.integers(2, max(3, height // 10))))
            cv2.ellipse(img, p1, axes, float(rng.uniform(0, 180)), 0, 360, colour, thickness=-1)
    return np.clip(img, 0.0, 1.0)


@lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    path = Path(skimage.__file__).parent / "data" / name
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"scikit-image sample photo {path} is missing")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def photo_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random crop of a scikit-image sample photograph, resized to the image size."""
    photo = _photo(PHOTO_FILES[int(rng.integers(len(PHOTO_FILES)))])
    ph, pw = photo.shape[:2]
    side = int(rng.integers(min(ph, pw) // 4, min(ph, pw) // 2 + 1))
    y0, x0 = int(rng.integers(0, ph - side + 1)), int(rng.integers(0, pw - side + 1))
    crop = photo[y0:y0 + side, x0:x0 + side]
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)
