"""Wrong masks for the robustness study (Fig. 5.13): what a method is given instead of the sample's own.

Each error returns the sample with its method-facing masks replaced and its ``clean`` frames kept,
so :func:`scoring.score_inpainting` (which always scores against ``clean`` over the union of the given
and the true hole) charges both what the method repainted and what it left unpainted. The amodal
mask stays the true one: the study isolates the hole's error from the shape completion's.

* ``dilate_<px>``: the hole grown by a disc of radius ``px`` inside the amodal region (the paper's
  14-px dilation): more of the object to synthesise, from less of it as context;
* ``shift``: the hole translated by ``shift_px`` (the dilation's size) along a per-sample direction,
  clipped to the amodal region: part of the occluder stays, part of the object is repainted;
* ``drop``: the hole removed in every other frame: the occluder stays there, untouched.

In every case the method is told ``visible = (visible | occluded) & ~hole``: the pixels of the
object it is not asked to paint count as seen (under ``shift`` and ``drop`` that includes occluder
pixels), so what it is told is coherent, however wrong; with the true hole it is the sample itself.
"""

from __future__ import annotations

import copy

import cv2
import numpy as np

from instseg.errors import InputError
from instseg.video.voin.data import VoiSample
from instseg.video.voin.inpaint_data import sample_name

GROSS_ERRORS: tuple[str, ...] = ("shift", "drop")
SHIFT_PX = 14


def condition_names(dilations: tuple[int, ...] | list[int], gross: tuple[str, ...] | list[str]) -> list[str]:
    """The study's conditions in curve order: ``dilate_0`` (the true masks) first."""
    return [f"dilate_{d}" for d in sorted(set(dilations))] + list(gross)


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def dilate_hole(hole: np.ndarray, amodal: np.ndarray, px: int) -> np.ndarray:
    """``hole`` (L, H, W) bool grown by a disc of radius ``px``, inside ``amodal``."""
    if px < 0:
        raise InputError(f"a dilation must be >= 0 px, got {px}")
    if px == 0:
        return hole & amodal
    kernel = _disc(px)
    grown = np.stack([cv2.dilate(h.astype(np.uint8), kernel) > 0 for h in hole])
    return grown & amodal


def shift_hole(hole: np.ndarray, amodal: np.ndarray, px: int, angle: float) -> np.ndarray:
    """``hole`` translated by ``px`` along ``angle`` (radians, whole pixels), clipped to ``amodal``."""
    dy, dx = int(round(px * np.sin(angle))), int(round(px * np.cos(angle)))
    out = np.zeros_like(hole)
    h, w = hole.shape[1:]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[:, yd, xd] = hole[:, ys, xs]
    return out & amodal


def drop_hole(hole: np.ndarray, every: int = 2) -> np.ndarray:
    """``hole`` with the frames ``1, 1 + every, ...`` emptied."""
    out = hole.copy()
    out[1::every] = False
    return out


def _angle(sample: VoiSample) -> float:
    """A direction fixed per sample (the same for every method and seed: the comparison stays paired)."""
    key = sum(ord(c) * (i + 1) for i, c in enumerate(sample_name(sample)))
    return float(np.random.default_rng(key).uniform(0, 2 * np.pi))


def with_hole(sample: VoiSample, hole: np.ndarray) -> VoiSample:
    """The sample told that ``hole`` (inside its amodal mask) is its occluded part (module docstring)."""
    if hole.shape != sample.occluded.shape:
        raise InputError(f"hole {hole.shape} does not fit the sample's masks {sample.occluded.shape}",
                         record=sample_name(sample))
    out = copy.copy(sample)
    out.occluded = hole & sample.amodal
    out.visible = (sample.visible | sample.occluded) & ~out.occluded
    out.meta = dict(sample.meta)
    return out


def corrupt_masks(sample: VoiSample, condition: str) -> VoiSample:
    """The sample under one condition of :func:`condition_names` (module docstring)."""
    hole, amodal = sample.occluded, sample.amodal
    if condition.startswith("dilate_"):
        try:
            px = int(condition.removeprefix("dilate_"))
        except ValueError:
            raise InputError(f"bad dilation condition {condition!r} (want dilate_<px>)",
                             record=sample_name(sample)) from None
        new = dilate_hole(hole, amodal, px)
    elif condition == "shift":
        new = shift_hole(hole, amodal, SHIFT_PX, _angle(sample))
    elif condition == "drop":
        new = drop_hole(hole)
    else:
        raise InputError(f"unknown mask condition {condition!r}; known: dilate_<px>, {', '.join(GROSS_ERRORS)}",
                         record=sample_name(sample))
    return with_hole(sample, new)
