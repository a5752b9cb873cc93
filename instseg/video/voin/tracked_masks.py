"""The target's masks as a tracker sees them: end-to-end de-occlusion's input (notebook 07).

The tracker (a tracker run, or a detector run tracked by the mask-IoU tracker,
:func:`~instseg.video.tracking.runs.load_tracker_run`) runs on the sample's *corrupted* frames, as a
user's video would reach it; the track whose masks overlap the target's true visible masks most
(mean IoU over the frames where either is non-empty) is the target. Nothing else of the truth is
used: the amodal masks then come from the shape model (:func:`predict_tracked_amodal`), and the
hole is ``amodal & ~visible``. A target no track matches (IoU below ``min_iou``) keeps empty masks
and is counted as missed, never dropped, so the study's mean pays for it.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from instseg.video.models.inference import detect_frames, track_frames
from instseg.video.tracking.runs import LoadedTracker
from instseg.video.voin.data import VoiSample
from instseg.video.voin.shape import ShapeCompletion
from instseg.video.voin.shape_training import predict_amodal

MIN_IOU = 0.1


@dataclass
class TrackedTarget:
    """The matched track's masks (L, H, W) bool (empty where it had no detection), its category id
    (0: missed) and mean IoU with the true visible masks."""

    visible: np.ndarray
    category: int
    iou: float

    @property
    def missed(self) -> bool:
        return self.category == 0


def mean_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean per-frame IoU over the frames where either mask is non-empty (0 if there are none)."""
    inter = (pred & truth).sum(axis=(1, 2))
    union = (pred | truth).sum(axis=(1, 2))
    keep = union > 0
    return float((inter[keep] / union[keep]).mean()) if keep.any() else 0.0


def track_clip(run: LoadedTracker, frames: np.ndarray) -> dict[int, tuple[np.ndarray, list[int]]]:
    """Per output track id: its masks (L, H, W) bool and the category ids of its detections."""
    detections = detect_frames(run.detector, list(frames), run.detector_spec.label_to_category_id,
                               with_features=run.embed_head is not None)
    tracks: dict[int, tuple[np.ndarray, list[int]]] = {}
    with torch.no_grad():
        for t, (det, ids) in enumerate(track_frames(detections, run.tracker, run.embed_head)):
            for k, track_id in enumerate(ids.tolist()):
                if track_id < 0:
                    continue
                masks, cats = tracks.setdefault(int(track_id), (np.zeros(frames.shape[:3], dtype=bool), []))
                masks[t] |= det.masks[k].numpy()
                cats.append(int(det.labels[k]))
    return tracks


def match_target(tracks: dict[int, tuple[np.ndarray, list[int]]], visible: np.ndarray, min_iou: float = MIN_IOU
                 ) -> TrackedTarget:
    """The track that is the target (module docstring), or a missed target."""
    best = max(((mean_iou(m, visible), tid) for tid, (m, _) in tracks.items()), default=(0.0, -1))
    if best[0] < min_iou:
        return TrackedTarget(np.zeros_like(visible, dtype=bool), 0, best[0])
    masks, cats = tracks[best[1]]
    return TrackedTarget(masks, Counter(cats).most_common(1)[0][0], best[0])


def predict_tracked_amodal(shape: ShapeCompletion, target: TrackedTarget, crop_size: int, context: float
                           ) -> np.ndarray:
    """The shape model's amodal masks from the tracked visible ones (the visible part counts as amodal)."""
    if not target.visible.any():
        return target.visible.copy()
    return predict_amodal(shape, [target.visible], [target.category], crop_size, context)[0] | target.visible


def tracked_sample(sample: VoiSample, visible: np.ndarray, amodal: np.ndarray) -> VoiSample:
    """The sample told the tracked masks: ``visible``, ``amodal`` and the hole ``amodal & ~visible``
    (its ``clean`` frames, what it is scored against, unchanged)."""
    out = copy.copy(sample)
    out.visible, out.amodal = visible.copy(), amodal | visible
    out.occluded = out.amodal & ~visible
    out.meta = dict(sample.meta)
    return out
