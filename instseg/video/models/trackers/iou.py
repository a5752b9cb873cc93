"""A SORT-like tracker on mask IoU: the "no appearance" control for the embedding trackers.

It links a detection to a track only by where the track's last mask was (moved on by its
box-centre velocity), never by what the object looks like. Whatever the embedding trackers gain
over it is thus what appearance buys: keeping identities through crossings, occlusion gaps and
swaps, where location alone is ambiguous or wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchvision.ops import nms

from instseg.video.models.trackers.base import Tracker, check_detections, config_from_dict


@dataclass(frozen=True)
class MaskIoUConfig:
    """Thresholds of the mask-IoU tracker; the score and memory settings follow QDTrack's BDD ones."""

    match_iou: float = 0.3  # least mask IoU for a detection to continue a track
    init_score: float = 0.7  # least score for an unmatched detection to start a track
    object_score: float = 0.3  # detections below are ignored
    max_age: int = 10  # a track unmatched for more frames than this is dropped
    predict_motion: bool = True  # move the last mask by the box-centre velocity before matching
    duplicate_iou: float = 0.7  # class-agnostic box NMS among the linked detections, as QDTrack's (1: off)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MaskIoUConfig:
        return config_from_dict(cls, values, "tracker.mask_iou")


@dataclass
class _Track:
    id: int
    label: int
    mask: Tensor  # [H, W] bool, as last matched
    centre: Tensor  # [2] box centre (x, y) when last matched
    velocity: Tensor  # [2] pixels per frame
    age: int = 0  # frames since last matched


def box_centres(boxes: Tensor) -> Tensor:
    """[N, 2] (x, y) centres of xyxy boxes."""
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def shift_mask(mask: Tensor, dx: int, dy: int) -> Tensor:
    """``mask`` translated by whole pixels; what leaves the frame is lost, what enters is empty."""
    h, w = mask.shape
    out = torch.zeros_like(mask)
    if abs(dx) >= w or abs(dy) >= h:
        return out
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        mask[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def mask_iou(a: Tensor, b: Tensor) -> Tensor:
    """[N, M] IoU of bool masks [N,H,W] and [M,H,W] (0 where both are empty)."""
    fa, fb = a.flatten(1).float(), b.flatten(1).float()
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


class MaskIoUTracker(Tracker):
    """Hungarian matching of detections to live tracks on same-category mask IoU."""

    def __init__(self, config: MaskIoUConfig | None = None):
        self.config = config or MaskIoUConfig()
        self.reset()

    def reset(self) -> None:
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._frame = 0

    def _predicted_masks(self, shape: tuple[int, int]) -> Tensor:
        masks = [shift_mask(t.mask, *(int(round(float(v))) for v in t.velocity * (t.age + 1)))
                 if self.config.predict_motion else t.mask for t in self._tracks]
        return torch.stack(masks) if masks else torch.zeros((0, *shape), dtype=torch.bool)

    def _match(self, masks: Tensor, labels: Tensor, candidates: Tensor) -> list[tuple[int, int]]:
        """(detection, track) pairs of the optimal same-category assignment with IoU >= match_iou."""
        if not len(candidates) or not self._tracks:
            return []
        iou = mask_iou(masks[candidates], self._predicted_masks(masks.shape[1:]).to(masks.device))
        track_labels = torch.tensor([t.label for t in self._tracks], device=labels.device)
        iou = iou * (labels[candidates][:, None] == track_labels[None, :])
        rows, cols = linear_sum_assignment(iou.cpu().numpy(), maximize=True)
        return [(int(candidates[r]), int(c)) for r, c in zip(rows, cols) if iou[r, c] >= self.config.match_iou]

    def update(self, detections: dict[str, Tensor]) -> Tensor:
        n = check_detections(detections, ("boxes", "scores", "labels", "masks"), self._frame)
        boxes, scores, labels = detections["boxes"], detections["scores"], detections["labels"]
        masks = detections["masks"].bool()
        ids = torch.full((n,), -1, dtype=torch.int64)
        centres = box_centres(boxes.float().cpu())
        candidates = torch.nonzero(scores >= self.config.object_score).flatten().cpu()
        if self.config.duplicate_iou < 1 and len(candidates):
            # the same duplicate removal as the embedding tracker's, so the two differ only in how they link
            kept = nms(boxes[candidates].float().cpu(), scores[candidates].float().cpu(), self.config.duplicate_iou)
            candidates = candidates[kept].sort().values
        matched = self._match(masks, labels, candidates)
        for d, k in matched:
            track = self._tracks[k]
            track.velocity = (centres[d] - track.centre) / (track.age + 1)
            track.centre, track.mask, track.age = centres[d], masks[d], 0
            ids[d] = track.id
        matched_tracks = {k for _, k in matched}
        for k, track in enumerate(self._tracks):
            if k not in matched_tracks:
                track.age += 1
        self._tracks = [t for t in self._tracks if t.age <= self.config.max_age]
        for d in candidates.tolist():
            if ids[d] < 0 and scores[d] >= self.config.init_score:
                ids[d] = self._next_id
                self._tracks.append(_Track(self._next_id, int(labels[d]), masks[d], centres[d], torch.zeros(2)))
                self._next_id += 1
        self._frame += 1
        return ids
