"""Appearance (textures) and backgrounds of the OccludedShapes benchmark.

Appearance carries no category information: every object's texture family, base hue,
saturation, value, shading, period and angle come from ONE distribution (:func:`draw_appearance`),
the same for every category. Within an image each category present draws its appearance once
and its instances get small jitters of it (:func:`jitter_appearance`), so overlapping
same-category objects look alike — the hard case for single-layer mask heads — while across
images a category takes every colour and texture. A mask head trained on some categories can
therefore only learn objectness from shape and structure, not from "the base categories'
colours" (``instseg.data.appearance_diagnostic`` measures that).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import skimage

APPEARANCE_FAMILIES: tuple[str, ...] = ("stripes", "dots", "checker", "gradient")

# Colour photographs shipped inside the scikit-image wheel (read from disk: nothing is downloaded).
PHOTO_FILES: tuple[str, ...] = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg",
                                "motorcycle_left.png", "brick.png", "grass.png", "gravel.png")


@dataclass(frozen=True)
class Appearance:
    """One object's texture: ``family`` blends a dark shade (``dark`` x base colour) into the base
    colour (HSV ``hue``, ``saturation``, ``value``) with a pattern of ``period`` pixels at ``angle``."""

    family: str
    hue: float
    saturation: float
    value: float
    dark: float
    period: float
    angle: float


def draw_appearance(rng: np.random.Generator) -> Appearance:
    """An appearance from the one category-independent distribution."""
    return Appearance(family=APPEARANCE_FAMILIES[int(rng.integers(len(APPEARANCE_FAMILIES)))],
                      hue=float(rng.uniform(0.0, 1.0)), saturation=float(rng.uniform(0.45, 0.9)),
                      value=float(rng.uniform(0.6, 0.95)), dark=float(rng.uniform(0.35, 0.55)),
                      period=float(rng.uniform(5.0, 9.0)), angle=float(rng.uniform(0.0, np.pi)))


def jitter_appearance(look: Appearance, rng: np.random.Generator) -> Appearance:
    """A same-category instance of ``look``: same family, nearly the same colour and pattern."""
    return replace(look, hue=(look.hue + float(rng.uniform(-0.02, 0.02))) % 1.0,
                   saturation=float(np.clip(look.saturation + rng.uniform(-0.04, 0.04), 0.0, 1.0)),
                   value=float(np.clip(look.value + rng.uniform(-0.04, 0.04), 0.0, 1.0)),
                   period=look.period * float(rng.uniform(0.95, 1.05)),
                   angle=look.angle + float(rng.uniform(-0.15, 0.15)))


def _rgb(hue: float, sat: float, val: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, sat, val), dtype=np.float32)


def _grid(height: int, width: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    return xx * c + yy * s, -xx * s + yy * c


def render_appearance(look: Appearance, height: int, width: int) -> np.ndarray:
    """A full-frame texture (HxWx3 float32 in [0, 1]); the caller keeps the object's pixels."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u, _ = _grid(height, width, look.angle)
    return appearance_at(look, xx, yy, max(height, width), u.min())


def appearance_at(look: Appearance, x: np.ndarray, y: np.ndarray, span: float, u_min: float) -> np.ndarray:
    """The texture of :func:`render_appearance` evaluated at given pixel coordinates (``x``, ``y``,
    same shape S; returns S x 3), so a video can attach it to a moving object by passing the
    object-local coordinates of each frame pixel. ``span`` and ``u_min`` fix the gradient's range,
    which the full-frame version takes from the frame: ``render_appearance`` is this function on
    the frame grid (float32 ``mgrid``, ``span = max(h, w)``, ``u_min`` = the grid's smallest ``u``)."""
    base = _rgb(look.hue, look.saturation, look.value)
    dark = base * look.dark
    c, s = np.cos(look.angle), np.sin(look.angle)
    u, v = x * c + y * s, -x * s + y * c
    period = look.period
    if look.family == "stripes":
        weight = (np.sin(2 * np.pi * u / period) > 0).astype(np.float32)
    elif look.family == "dots":
        weight = 1.0 - (((u % period) - period / 2) ** 2 + ((v % period) - period / 2) ** 2
                        < (period / 3.2) ** 2).astype(np.float32)
    elif look.family == "checker":
        weight = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    elif look.family == "gradient":
        weight = np.clip((u - u_min) / span, 0.0, 1.0)
    else:
        raise ValueError(f"unknown appearance family {look.family!r}; known: {', '.join(APPEARANCE_FAMILIES)}")
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
