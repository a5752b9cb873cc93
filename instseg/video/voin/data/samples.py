"""One VOI sample: a clip of one target object, corrupted by an occluder, with its clean ground truth.

Per frame the four masks of YouTube-VOI: ``amodal`` (the target's full outline), ``occluder`` (the
occluder's full mask), ``occluded`` (= amodal and occluder) and ``visible`` (= visible in the
source and not under the occluder). Two kinds:

* **synthetic**: a pasted :class:`Occluder` over a target that nothing in the scene hides in the
  clip, so the source frames are the exact clean ground truth (the target as it was before the
  paste) and ``occluded | visible == amodal``;
* **natural**: the benchmark frames as they are, for a target partly hidden by other scene objects
  (``occluder`` = the union of the objects in front of it); the clean ground truth re-renders the
  scene with the target moved in front of everything, with the generator's renderer and noise
  stream, so it differs from the frames only on the target's amodal mask.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instseg.errors import InputError
from instseg.video.data.occluded_shapes_vis.render import amodal_mask, frame_masks, paint_order, render_frame, track
from instseg.video.voin.data.config import VoiConfig
from instseg.video.voin.data.noise import paint, sensor_noise
from instseg.video.voin.data.occluders import Occluder
from instseg.video.voin.data.placement import coverage, place_occluder

MASKS: tuple[str, ...] = ("amodal", "occluded", "occluder", "visible")


@dataclass
class VoiSample:
    """Frames (L, H, W, 3) uint8 and masks (L, H, W) bool of one target over one clip; ``meta`` says
    where it came from (video, track, first frame, kind, the occluder's record)."""

    corrupted: np.ndarray
    clean: np.ndarray
    amodal: np.ndarray
    occluded: np.ndarray
    occluder: np.ndarray
    visible: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(self.corrupted.shape[0])


def clip_masks(scene: dict[str, Any], start: int, length: int) -> list[dict[int, dict[str, np.ndarray]]]:
    """The generator's per-frame masks of frames ``start .. start + length - 1``."""
    return [frame_masks(scene, t) for t in range(start, start + length)]


def target_radius(scene: dict[str, Any], track_id: int, start: int, length: int) -> float:
    """The target's mean rendered radius over the clip (pixels)."""
    return float(np.mean([f[3] for f in track(scene, track_id)["frames"][start:start + length]]))


def synthetic_sample(scene: dict[str, Any], track_id: int, start: int, cfg: VoiConfig, template: Occluder,
                     rng: np.random.Generator, masks: list[dict] | None = None,
                     video_id: int | None = None) -> VoiSample:
    """Paste ``template`` (drawn a path by :func:`place_occluder`) over the target in frames
    ``start .. start + clip_length - 1``; the occluder's pixels get the frame's own sensor noise.
    The target must be unoccluded in the source clip (:func:`builder.eligible_clips`), else InputError."""
    n, h, w = cfg.clip_length, scene["height"], scene["width"]
    masks = masks if masks is not None else clip_masks(scene, start, n)
    amodal = np.stack([m[track_id]["amodal"] for m in masks])
    seen = np.stack([m[track_id]["visible"] for m in masks])
    obj = track(scene, track_id)
    centres = np.array([f[:2] for f in obj["frames"][start:start + n]], dtype=np.float64)
    record = f"video {'?' if video_id is None else video_id} track {track_id} frames {start}..{start + n - 1}"
    hidden = [start + k for k in range(n) if not np.array_equal(seen[k], amodal[k])]
    if hidden:  # the source frames would not show all of the target: no exact clean ground truth
        raise InputError(f"scene objects hide part of the target in frames {hidden}; a synthetic sample needs "
                         "it unoccluded (make a natural sample instead)", record=record)
    occ, occ_masks = place_occluder(rng, cfg, template, amodal, centres, target_radius(scene, track_id, start, n),
                                    record)
    clean = np.stack([render_frame(scene, t) for t in range(start, start + n)])
    corrupted = clean.copy()
    for k in range(n):
        if occ_masks[k].any():
            corrupted[k] = paint(clean[k], occ_masks[k], occ.colours(k, occ_masks[k], h, w),
                                 sensor_noise(scene, start + k))
    meta = {"kind": "synthetic", "track_id": track_id, "start": start, "length": n, "occluder": occ.describe(),
            "occluded_fraction": np.round(coverage(occ_masks, amodal), 4).tolist()}
    return VoiSample(corrupted, clean, amodal, amodal & occ_masks, occ_masks, seen & ~occ_masks, meta)


def front_scene(scene: dict[str, Any], track_id: int) -> dict[str, Any]:
    """A copy of ``scene`` with the target in front of every other object in every frame (only its
    depths change, so the render differs from the original only on the target's amodal mask)."""
    out = copy.deepcopy(scene)
    top = max(f[4] for o in scene["objects"] for f in o["frames"]) + 1.0
    for f in track(out, track_id)["frames"]:
        f[4] = top
    return out


def natural_sample(scene: dict[str, Any], track_id: int, start: int, cfg: VoiConfig,
                   masks: list[dict] | None = None) -> VoiSample:
    """The benchmark frames of the clip with the target's natural occluders; clean = the scene
    re-rendered with the target in front."""
    n, h, w = cfg.clip_length, scene["height"], scene["width"]
    masks = masks if masks is not None else clip_masks(scene, start, n)
    amodal = np.stack([m[track_id]["amodal"] for m in masks])
    visible = np.stack([m[track_id]["visible"] for m in masks])
    occluder = np.zeros_like(amodal)
    fronts: list[list[int]] = []
    for k, t in enumerate(range(start, start + n)):
        order = [o["track_id"] for o in paint_order(scene, t)]
        in_front = order[order.index(track_id) + 1:]
        fronts.append(in_front)
        for other in in_front:
            occluder[k] |= amodal_mask(scene, track(scene, other), t)
    corrupted = np.stack([render_frame(scene, t) for t in range(start, start + n)])
    lifted = front_scene(scene, track_id)
    clean = np.stack([render_frame(lifted, t) for t in range(start, start + n)])
    meta = {"kind": "natural", "track_id": track_id, "start": start, "length": n,
            "occluder": {"kind": "natural", "tracks_in_front": fronts},
            "occluded_fraction": np.round(coverage(occluder, amodal), 4).tolist()}
    return VoiSample(corrupted, clean, amodal, amodal & occluder, occluder, visible & ~occluder, meta)
