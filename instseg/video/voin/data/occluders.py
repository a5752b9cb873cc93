"""Synthetic occluders: object outlines from other videos and Bezier blobs, each with its own motion.

An occluder is a small scene object of the generator's kind: a per-frame pose ``[cx, cy, angle,
radius, depth, gain, phase]`` (the scene JSON's format) and an :class:`Appearance`, so its texture
is the generator's own (``render._texture``: attached to the occluder, moving, turning and scaling
with it, with a slow illumination drift). Its outline is either a benchmark shape with the aspect of
an object from another video (YouTube-VOI's object-shaped occluders) or a smooth closed Bezier
curve (STTN-style blobs). Motion: the generator's path model (velocity plus a smooth AR(1)
deviation, so it is never constant) at the target's mean velocity plus a drawn relative velocity,
with a drifting scale (log-radius oscillation) and a spin with a random-walk wobble.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from instseg.data.appearance import Appearance
from instseg.data.shapes import ShapeSpec, render_shape
from instseg.video.data.occluded_shapes_vis.motion import oscillation, smooth_path
from instseg.video.data.occluded_shapes_vis.render import _texture
from instseg.video.voin.data.config import VoiConfig

KINDS: tuple[str, ...] = ("object", "blob")
_SHIFT = 4  # OpenCV fixed-point bits, as the benchmark's shapes
FRONT = 1.0e3  # depth written into an occluder's poses: in front of every scene object


@dataclass
class Occluder:
    """One synthetic occluder over a clip: ``poses`` is (L, 7) in the scene JSON's per-frame format."""

    kind: str  # "object" (a benchmark shape) or "blob" (a Bezier outline)
    look: Appearance
    poses: np.ndarray
    shape: str | None = None  # kind "object": the shape family
    aspect: float = 1.0
    outline: np.ndarray | None = None  # kind "blob": (N, 2) closed polygon, unit extent
    source: dict[str, Any] = field(default_factory=dict)  # where the outline / look came from
    tries: int = 0  # placement draws it took

    def mask(self, t: int, height: int, width: int) -> np.ndarray:
        """Its outline at clip frame ``t`` (bool HxW, clipped to the frame)."""
        cx, cy, angle, radius = (float(v) for v in self.poses[t, :4])
        if self.kind == "object":
            return render_shape(ShapeSpec(self.shape, cx, cy, radius, angle, self.aspect), height, width)
        local = self.outline * np.array([1.0, self.aspect]) * radius
        c, s = np.cos(angle), np.sin(angle)
        pts = local @ np.array([[c, s], [-s, c]]) + np.array([cx, cy])
        canvas = np.zeros((height, width), dtype=np.uint8)
        cv2.fillPoly(canvas, [np.round(pts * (1 << _SHIFT)).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=_SHIFT)
        return canvas.astype(bool)

    def colours(self, t: int, mask: np.ndarray, height: int, width: int) -> np.ndarray:
        """Noise-free colours (N x 3 float32) of the pixels ``mask`` at clip frame ``t``: the generator's
        texture evaluated in the occluder's own coordinates."""
        obj = {"look": asdict(self.look), "frames": self.poses.tolist()}
        return _texture({"height": height, "width": width}, obj, t, mask)

    def describe(self) -> dict[str, Any]:
        """A JSON-able record (index and npz metadata): enough to redraw the occluder exactly."""
        return {"kind": self.kind, "shape": self.shape, "aspect": self.aspect, "look": asdict(self.look),
                "poses": np.round(self.poses, 6).tolist(), "source": self.source, "tries": self.tries,
                "outline": None if self.outline is None else np.round(self.outline, 6).tolist()}


def bezier_outline(rng: np.random.Generator, points: tuple[int, int], samples: int = 10) -> np.ndarray:
    """A smooth closed curve: quadratic Bezier pieces through the midpoints of control points at
    increasing angles and random radii (star-shaped, so never self-intersecting); extent 1."""
    k = int(rng.integers(points[0], points[1] + 1))
    angles = 2 * np.pi * (np.arange(k) + rng.uniform(-0.3, 0.3, size=k)) / k
    radii = rng.uniform(0.5, 1.0, size=k)
    ctrl = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    nxt, prv = np.roll(ctrl, -1, axis=0), np.roll(ctrl, 1, axis=0)
    p0, p2 = (prv + ctrl) / 2, (ctrl + nxt) / 2
    s = np.linspace(0.0, 1.0, samples, endpoint=False)[None, :, None]
    curve = (1 - s) ** 2 * p0[:, None] + 2 * (1 - s) * s * ctrl[:, None] + s ** 2 * p2[:, None]
    curve = curve.reshape(-1, 2)
    return curve / np.linalg.norm(curve, axis=1).max()


def occluder_poses(rng: np.random.Generator, cfg: VoiConfig, target_centres: np.ndarray, anchor_xy: np.ndarray,
                   radius: float) -> np.ndarray:
    """(L, 7) poses: through ``anchor_xy`` at the middle frame, moving at the target's mean velocity
    plus a relative velocity of at most ``max_relative_speed`` px/frame and a smooth random deviation;
    scale and angle drift smoothly; gain and texture phase drift as the generator's objects do."""
    n = len(target_centres)
    mean_velocity = (target_centres[-1] - target_centres[0]) / max(n - 1, 1)
    heading, speed = float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0.0, cfg.max_relative_speed))
    velocity = mean_velocity + speed * np.array([np.cos(heading), np.sin(heading)])
    centres = smooth_path(rng, n, n // 2, anchor_xy, velocity, cfg.accel_std)
    spin = float(rng.uniform(-cfg.max_spin, cfg.max_spin))
    angles = float(rng.uniform(0, 2 * np.pi)) + spin * np.arange(n) + np.cumsum(rng.normal(0, 0.3 * cfg.max_spin, n))
    radii = radius * np.exp(oscillation(rng, n, cfg.scale_amplitude, (1.0 * n, 3.0 * n)))
    gains = 1.0 + oscillation(rng, n, cfg.gain_drift, (1.0 * n, 3.0 * n))
    phases = float(rng.uniform(-cfg.texture_drift, cfg.texture_drift)) * np.arange(n)
    return np.stack([centres[:, 0], centres[:, 1], angles, radii, np.full(n, FRONT), gains, phases], axis=1)
