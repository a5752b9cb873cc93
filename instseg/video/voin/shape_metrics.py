"""Amodal shape metrics as SaVos reports them: IoU of the full (amodal) mask and IoU on the
invisible region, i.e. the predicted mask outside the visible one (``pred & ~visible``) against the
true occluded part.

Pooling (our reading of SaVos' "mIoU" / "mIoU_occ"; its text does not spell it out): the headline
numbers are **means of per-frame IoUs over all frames of all samples**; the invisible IoU averages
only the frames whose true occluded part is non-empty (a frame with nothing hidden has no
invisible region to complete). A frame where both masks of a pair are empty has an undefined IoU
(NaN) and is left out of the mean. Beside them, per object, the video IoU ``sum of intersections /
sum of unions`` over its frames (OVIS / YouTube-VIS style), averaged over objects.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from instseg.errors import InputError


def _masks(record: str, **masks: np.ndarray) -> dict[str, np.ndarray]:
    """The masks as bool (T, H, W) arrays of one shape, else InputError naming ``record``."""
    out = {k: np.asarray(v).astype(bool) for k, v in masks.items()}
    shapes = {k: v.shape for k, v in out.items()}
    if any(len(s) != 3 for s in shapes.values()) or len(set(shapes.values())) != 1:
        raise InputError(f"masks must all be (T, H, W) of one shape, got {shapes}", record=record)
    return out


def _ratio(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


@dataclass(frozen=True)
class ShapeScores:
    """One sample's per-frame intersections and unions of the full masks and of the invisible region."""

    inter: np.ndarray  # (T,) |pred & amodal|
    union: np.ndarray  # (T,) |pred | amodal|
    invisible_inter: np.ndarray  # (T,) |pred & ~visible & occluded|
    invisible_union: np.ndarray  # (T,) |(pred & ~visible) | occluded|
    occluded_frames: np.ndarray  # (T,) bool: the true occluded part is non-empty

    @property
    def frame_iou(self) -> np.ndarray:
        """Per-frame amodal IoU; NaN where both masks are empty."""
        return _ratio(self.inter, self.union)

    @property
    def frame_invisible_iou(self) -> np.ndarray:
        """Per-frame invisible-region IoU; NaN where both the predicted and the true region are empty."""
        return _ratio(self.invisible_inter, self.invisible_union)

    @property
    def video_iou(self) -> float:
        """Sum of intersections / sum of unions over the frames (NaN if every union is empty)."""
        return float(_ratio(self.inter.sum(), self.union.sum()))

    @property
    def video_invisible_iou(self) -> float:
        """The same on the invisible region, over the frames with an occluded part."""
        keep = self.occluded_frames
        return float(_ratio(self.invisible_inter[keep].sum(), self.invisible_union[keep].sum()))


def shape_scores(pred: np.ndarray, amodal: np.ndarray, visible: np.ndarray, occluded: np.ndarray,
                 record: str = "shape scores") -> ShapeScores:
    """Scores of a predicted amodal mask ``pred`` against the truth; all (T, H, W), bool or 0/1."""
    m = _masks(record, pred=pred, amodal=amodal, visible=visible, occluded=occluded)
    p, a, occ = m["pred"], m["amodal"], m["occluded"]
    hidden = p & ~m["visible"]
    count = lambda x: x.reshape(x.shape[0], -1).sum(1).astype(np.int64)  # noqa: E731
    return ShapeScores(count(p & a), count(p | a), count(hidden & occ), count(hidden | occ), count(occ) > 0)


def pool_scores(scores: Iterable[ShapeScores]) -> dict[str, float]:
    """The headline numbers of many samples (see the module docstring): ``iou`` and
    ``invisible_iou`` (means of per-frame IoUs), ``video_iou`` and ``video_invisible_iou`` (means over
    objects of sum/sum), and the counts they rest on. NaN where nothing is defined."""
    scores = list(scores)
    frame = np.concatenate([s.frame_iou for s in scores]) if scores else np.zeros(0)
    inv = np.concatenate([s.frame_invisible_iou[s.occluded_frames] for s in scores]) if scores else np.zeros(0)
    video = np.array([s.video_iou for s in scores])
    video_inv = np.array([s.video_invisible_iou for s in scores])
    mean = lambda x: float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")  # noqa: E731
    return {"iou": mean(frame), "invisible_iou": mean(inv), "video_iou": mean(video),
            "video_invisible_iou": mean(video_inv), "samples": len(scores), "frames": int(np.isfinite(frame).sum()),
            "occluded_frames": int(np.isfinite(inv).sum())}
