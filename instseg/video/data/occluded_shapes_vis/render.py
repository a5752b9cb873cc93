"""Frames, masks and clean object layers of OccludedShapes-VIS, recomputed exactly from a scene dict.

A scene (``videos[i]["scene"]`` in the annotation JSON) holds everything a frame depends on:
per object its shape, aspect, look and per-frame ``[cx, cy, angle, radius, depth, gain, phase]``;
the background's kind and seed and the camera's crop offset per frame; the noise level and seed.
Frames are painted back to front by depth with the image benchmark's renderer
(``instseg.data.shapes.render_shape``) and textures (``instseg.data.appearance``). A texture is
evaluated in the object's own coordinates (its frame-0 pose, shifted by the drifting ``phase``),
so it moves, turns and scales with the object; ``gain`` is a slow illumination drift. Noise comes
from a per-frame stream, so a frame with some objects removed differs from the stored frame only
where they were.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterable

import numpy as np

from instseg.data.appearance import Appearance, appearance_at, clutter_background, photo_background
from instseg.data.shapes import ShapeSpec, render_shape
from instseg.errors import InputError
from instseg.video.data.occluded_shapes_vis.motion import pose_map

POSE_FIELDS: tuple[str, ...] = ("cx", "cy", "angle", "radius", "depth", "gain", "phase")


def check_frame(scene: dict[str, Any], t: int) -> None:
    if not 0 <= t < scene["length"]:
        raise InputError(f"frame index {t} outside 0..{scene['length'] - 1}", record=f"frame {t}")


def track(scene: dict[str, Any], track_id: int) -> dict[str, Any]:
    """The scene object with this track id."""
    for obj in scene["objects"]:
        if obj["track_id"] == track_id:
            return obj
    raise InputError(f"no track {track_id} in the scene (tracks {[o['track_id'] for o in scene['objects']]})",
                     record=f"track {track_id}")


def paint_order(scene: dict[str, Any], t: int) -> list[dict[str, Any]]:
    """Objects back to front at frame ``t`` (depth, then track id, so ties are ordered too)."""
    return sorted(scene["objects"], key=lambda o: (o["frames"][t][4], o["track_id"]))


def amodal_mask(scene: dict[str, Any], obj: dict[str, Any], t: int) -> np.ndarray:
    """The object's whole outline at frame ``t``, clipped to the frame (bool HxW)."""
    cx, cy, angle, radius = obj["frames"][t][:4]
    return render_shape(ShapeSpec(obj["shape"], cx, cy, radius, angle, obj["aspect"]), scene["height"], scene["width"])


def frame_masks(scene: dict[str, Any], t: int) -> dict[int, dict[str, np.ndarray]]:
    """``{track_id: {"visible", "amodal"}}`` at frame ``t``: visible = amodal minus every object in front."""
    check_frame(scene, t)
    out: dict[int, dict[str, np.ndarray]] = {}
    covered = np.zeros((scene["height"], scene["width"]), dtype=bool)
    for obj in reversed(paint_order(scene, t)):  # front to back
        amodal = amodal_mask(scene, obj, t)
        out[obj["track_id"]] = {"visible": amodal & ~covered, "amodal": amodal}
        covered |= amodal
    return out


def _u_min(angle: float, height: int, width: int) -> float:
    """Smallest texture coordinate u over the frame grid: the gradient's origin, as in the image benchmark."""
    xs = np.array([0, width - 1, 0, width - 1], dtype=np.float32)
    ys = np.array([0, 0, height - 1, height - 1], dtype=np.float32)
    return float((xs * np.cos(angle) + ys * np.sin(angle)).min())


def _texture(scene: dict[str, Any], obj: dict[str, Any], t: int, mask: np.ndarray) -> np.ndarray:
    """Colours (N x 3 float32 in [0, 1]) of the object's pixels ``mask`` at frame ``t``."""
    look = Appearance(**obj["look"])
    ys, xs = np.nonzero(mask)
    A, b = pose_map(obj["frames"][t], obj["frames"][0])
    phase, gain = obj["frames"][t][6], obj["frames"][t][5]
    zx = A[0, 0] * xs + A[0, 1] * ys + b[0] - phase * np.cos(look.angle)
    zy = A[1, 0] * xs + A[1, 1] * ys + b[1] - phase * np.sin(look.angle)
    span = max(scene["height"], scene["width"])
    colour = appearance_at(look, zx, zy, span, _u_min(look.angle, scene["height"], scene["width"]))
    return np.clip(colour * gain, 0.0, 1.0).astype(np.float32)


@lru_cache(maxsize=8)
def _canvas(kind: str, seed: int, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    canvas = photo_background(rng, height, width) if kind == "photo" else clutter_background(rng, height, width)
    canvas = np.asarray(canvas, dtype=np.float32)
    canvas.flags.writeable = False
    return canvas


def background(scene: dict[str, Any], t: int) -> np.ndarray:
    """The background at frame ``t``: the camera's crop of a canvas larger than the frame (HxWx3 float32)."""
    bg = scene["background"]
    canvas = _canvas(bg["kind"], bg["seed"], bg["height"], bg["width"])
    ox, oy = scene["camera"][t]
    return canvas[oy:oy + scene["height"], ox:ox + scene["width"]].copy()


def object_layer(scene: dict[str, Any], track_id: int, t: int) -> tuple[np.ndarray, np.ndarray]:
    """The object's clean (unoccluded, noise-free) appearance at frame ``t``: rgb uint8 HxWx3 (0 outside
    the object) and its alpha, the amodal mask (bool HxW)."""
    check_frame(scene, t)
    obj = track(scene, track_id)
    alpha = amodal_mask(scene, obj, t)
    rgb = np.zeros((scene["height"], scene["width"], 3), dtype=np.uint8)
    rgb[alpha] = np.clip(np.round(_texture(scene, obj, t, alpha) * 255.0), 0, 255).astype(np.uint8)
    return rgb, alpha


def render_frame(scene: dict[str, Any], t: int, hidden: Iterable[int] = frozenset()) -> np.ndarray:
    """Frame ``t`` (uint8 HxWx3) with the tracks in ``hidden`` removed; with none removed it is the
    stored PNG, bit for bit."""
    check_frame(scene, t)
    hidden = set(hidden)
    for track_id in hidden:
        track(scene, track_id)
    image = background(scene, t)
    for obj in paint_order(scene, t):
        if obj["track_id"] in hidden:
            continue
        mask = amodal_mask(scene, obj, t)
        if mask.any():
            image[mask] = _texture(scene, obj, t, mask)
    noise = np.random.default_rng([scene["noise"]["seed"], t]).normal(0.0, scene["noise"]["std"], size=image.shape)
    image = image + noise.astype(np.float32)
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
