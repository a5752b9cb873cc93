"""Shape families of the OccludedShapes benchmark, rasterised as amodal masks.

A category *is* its shape: ten families with ten distinct outlines, grouped by structure so that
both halves of the A/B split hold every kind of structure a mask head can learn from — convex
outlines (disc, triangle, square), annular bands (ring, C-shape), arms (five- and four-pointed
stars, cross) and notches (chevron, crescent). Seven families are non-convex: an occluder lying
across them can split the visible part into disjoint pieces, the case BCNet's bilayer head targets.
Outlines are polygons filled by OpenCV with sub-pixel vertices, so rendering is fast and
bit-for-bit repeatable for a pinned OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SHAPE_FAMILIES: tuple[str, ...] = ("disc", "ring", "crescent", "star", "cross", "triangle",
                                   "square", "c_shape", "chevron", "four_point_star")
NON_CONVEX: frozenset[str] = frozenset({"ring", "crescent", "star", "cross", "c_shape", "chevron", "four_point_star"})
# family -> structure (the COCO ``supercategory``): what a shape shares with families of the other half
STRUCTURE: dict[str, str] = {
    "disc": "convex", "triangle": "convex", "square": "convex",
    "ring": "annular", "c_shape": "annular",
    "star": "armed", "cross": "armed", "four_point_star": "armed",
    "chevron": "notched", "crescent": "notched",
}

_SHIFT = 4  # OpenCV fixed-point bits for sub-pixel polygon vertices


@dataclass(frozen=True)
class ShapeSpec:
    """Where and how one object outline is drawn (pixels, radians)."""

    family: str
    cx: float
    cy: float
    radius: float
    angle: float
    aspect: float = 1.0  # minor/major axis ratio, squashes the outline along its local y axis


def _circle(n: int = 48, r: float = 1.0, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([dx + r * np.cos(t), dy + r * np.sin(t)], axis=1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, 2 * points, endpoint=False) - np.pi / 2
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _cross(arm: float = 0.34) -> np.ndarray:
    a = arm
    return np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1],
                     [-a, a], [-1, a], [-1, -a], [-a, -a]], dtype=np.float64)


def _triangle() -> np.ndarray:
    t = np.array([-np.pi / 2, np.pi / 6, 5 * np.pi / 6])
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _square(half: float = 0.8) -> np.ndarray:
    return np.array([[-half, -half], [half, -half], [half, half], [-half, half]], dtype=np.float64)


def _c_shape(inner: float = 0.55, gap: float = np.pi / 2.2, n: int = 40) -> np.ndarray:
    """An annulus with a wedge of ``gap`` radians cut out, as one polygon (outer arc, inner arc back)."""
    t = np.linspace(gap / 2, 2 * np.pi - gap / 2, n)
    outer = np.stack([np.cos(t), np.sin(t)], axis=1)
    return np.concatenate([outer, inner * outer[::-1]])


def _chevron(width: float = 0.55) -> np.ndarray:
    """An arrowhead '>' with two arms ``width`` thick (measured along x)."""
    return np.array([[-0.9, -1.0], [-0.9 + width, -1.0], [0.9, 0.0], [-0.9 + width, 1.0], [-0.9, 1.0],
                     [0.9 - width * 1.9, 0.0]], dtype=np.float64)


# family -> (filled outlines, holes cut out afterwards), in unit local coordinates
_OUTLINES: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {
    "disc": ([_circle()], []),
    "ring": ([_circle()], [_circle(r=0.58)]),
    "crescent": ([_circle()], [_circle(r=0.82, dx=0.45)]),
    "star": ([_star()], []),
    "cross": ([_cross()], []),
    "triangle": ([_triangle()], []),
    "square": ([_square()], []),
    "c_shape": ([_c_shape()], []),
    "chevron": ([_chevron()], []),
    "four_point_star": ([_star(points=4, inner=0.36)], []),
}


def _to_pixels(poly: np.ndarray, spec: ShapeSpec) -> np.ndarray:
    local = poly * np.array([1.0, spec.aspect]) * spec.radius
    c, s = np.cos(spec.angle), np.sin(spec.angle)
    rotated = local @ np.array([[c, s], [-s, c]])
    pts = rotated + np.array([spec.cx, spec.cy])
    return np.round(pts * (1 << _SHIFT)).astype(np.int32)


def render_shape(spec: ShapeSpec, height: int, width: int) -> np.ndarray:
    """Amodal mask of one object, clipped to the image frame (bool, HxW)."""
    if spec.family not in _OUTLINES:
        raise ValueError(f"unknown shape family {spec.family!r}; known: {', '.join(SHAPE_FAMILIES)}")
    canvas = np.zeros((height, width), dtype=np.uint8)
    fills, holes = _OUTLINES[spec.family]
    for poly in fills:
        cv2.fillPoly(canvas, [_to_pixels(poly, spec)], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    for poly in holes:
        cv2.fillPoly(canvas, [_to_pixels(poly, spec)], 0, lineType=cv2.LINE_8, shift=_SHIFT)
    return canvas.astype(bool)
