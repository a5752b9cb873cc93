"""QDTrack's tracker: bi-softmax matching of appearance embeddings against a memo of recent
tracklets and of the last frame's backdrops (unmatched low-score detections).

Why backdrops: a false positive next to a tracked object would otherwise compete for nothing
and start a spurious track; kept as extra columns of the matching, such detections absorb the
softmax mass of their look-alikes in the next frame, so they are matched to "background" instead.

Order of operations (SysCV/qdtrack ``QuasiDenseEmbedTracker``, BDD100K settings): sort by score;
drop a detection overlapping a higher-scored one by IoU > 0.7 (> 0.3 if its own score is below
the object score); score = mean of the row and column softmax of the dot products (detections x
[tracklets, backdrops]), zero across categories; in descending score order each detection takes
its best column if that score is > 0.5 and the column is a tracklet, then only if its own score is
> the object score (the column is then closed to the later detections; a weaker detection matched
with score > 0.5 is suppressed instead); unmatched detections with score > 0.7 start tracks;
matched tracklets blend in the new embedding with weight 0.8; the other unmatched detections not
overlapping an earlier one by IoU > 0.3 become the next frame's backdrops; a tracklet not seen for
10 frames is forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torchvision.ops import box_iou

from instseg.errors import InputError
from instseg.video.models.trackers.base import Tracker, check_detections, config_from_dict

_SUPPRESSED = -2  # a weak detection that looks like a live track: neither output nor a backdrop


@dataclass(frozen=True)
class QuasiDenseConfig:
    """QDTrack's tracker settings for BDD100K."""

    init_score: float = 0.7  # an unmatched detection with a score above starts a track
    object_score: float = 0.3  # a detection must score above to continue a track
    match_score: float = 0.5  # least bi-softmax score of a match
    memo_frames: int = 10  # a tracklet unseen for this many frames is forgotten
    backdrop_frames: int = 1  # frames of backdrops kept
    momentum: float = 0.8  # weight of the new embedding in a matched tracklet's
    nms_conf: float = 0.5  # a weak detection matched above this score is suppressed
    nms_backdrop_iou: float = 0.3  # duplicate-removal IoU for weak detections and for backdrops
    nms_class_iou: float = 0.7  # class-agnostic duplicate-removal IoU for confident detections
    with_cats: bool = True  # match only within a category

    def __post_init__(self) -> None:
        if not 0 <= self.momentum <= 1 or self.memo_frames < 0 or self.backdrop_frames < 0:
            raise InputError("momentum must lie in [0, 1] and the memo lengths be >= 0", record="tracker.quasi_dense")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> QuasiDenseConfig:
        return config_from_dict(cls, values, "tracker.quasi_dense")


@dataclass
class _Tracklet:
    box: Tensor
    embed: Tensor
    label: int
    last_frame: int


@dataclass(frozen=True)
class _Backdrops:
    boxes: Tensor
    embeds: Tensor
    labels: Tensor


class QuasiDenseTracker(Tracker):
    """Appearance tracking on ``detections["embeddings"]`` (QDTrack's quasi-dense tracker)."""

    def __init__(self, config: QuasiDenseConfig | None = None):
        self.config = config or QuasiDenseConfig()
        self.reset()

    def reset(self) -> None:
        self._tracklets: dict[int, _Tracklet] = {}
        self._backdrops: list[_Backdrops] = []
        self._next_id = 1
        self._frame = 0

    @property
    def memo(self) -> dict[int, Tensor]:
        """The embedding each remembered track would be matched on."""
        return {k: t.embed for k, t in self._tracklets.items()}

    def _distinct(self, boxes: Tensor, scores: Tensor) -> Tensor:
        """Which score-sorted detections overlap no higher-scored one beyond their NMS threshold."""
        iou = box_iou(boxes, boxes)
        keep = torch.ones(len(boxes), dtype=torch.bool)
        for i in range(1, len(boxes)):
            thr = self.config.nms_backdrop_iou if scores[i] < self.config.object_score else self.config.nms_class_iou
            keep[i] = not bool((iou[i, :i] > thr).any())
        return keep

    def _match(self, scores: Tensor, labels: Tensor, embeds: Tensor) -> Tensor:
        """Track id per score-sorted detection (-1 unmatched, ``_SUPPRESSED``)."""
        ids = torch.full((len(scores),), -1, dtype=torch.int64)
        if not len(scores) or not self._tracklets:
            return ids
        tracklets = list(self._tracklets.items())
        memo_embeds = torch.cat([torch.stack([t.embed for _, t in tracklets])] + [b.embeds for b in self._backdrops])
        memo_labels = torch.cat([torch.tensor([t.label for _, t in tracklets])] + [b.labels for b in self._backdrops])
        memo_ids = torch.cat([torch.tensor([k for k, _ in tracklets])]
                             + [torch.full((len(b.labels),), -1, dtype=torch.int64) for b in self._backdrops])
        dots = embeds @ memo_embeds.T
        similarity = (dots.softmax(dim=1) + dots.softmax(dim=0)) / 2
        if self.config.with_cats:
            similarity = similarity * (labels[:, None] == memo_labels[None, :])
        for i in range(len(scores)):
            column = int(similarity[i].argmax())
            conf = float(similarity[i, column])
            if conf <= self.config.match_score or memo_ids[column] < 0:
                continue
            if scores[i] > self.config.object_score:
                ids[i] = memo_ids[column]
                similarity[i + 1:, column] = 0  # the earlier rows are decided already
            elif conf > self.config.nms_conf:
                ids[i] = _SUPPRESSED
        return ids

    def _update_memo(self, ids: Tensor, boxes: Tensor, labels: Tensor, embeds: Tensor) -> None:
        m = self.config.momentum
        for i in torch.nonzero(ids > 0).flatten().tolist():
            k = int(ids[i])
            old = self._tracklets.get(k)
            embed = embeds[i] if old is None else (1 - m) * old.embed + m * embeds[i]
            self._tracklets[k] = _Tracklet(boxes[i], embed, int(labels[i]), self._frame)
        candidates = torch.nonzero(ids == -1).flatten()
        iou = box_iou(boxes[candidates], boxes)
        backdrop = [int(c) for r, c in enumerate(candidates)
                    if not bool((iou[r, :c] > self.config.nms_backdrop_iou).any())]
        self._backdrops.insert(0, _Backdrops(boxes[backdrop], embeds[backdrop], labels[backdrop]))
        self._backdrops = self._backdrops[:self.config.backdrop_frames]
        self._tracklets = {k: t for k, t in self._tracklets.items()
                           if self._frame - t.last_frame < self.config.memo_frames}

    def update(self, detections: dict[str, Tensor]) -> Tensor:
        n = check_detections(detections, ("boxes", "scores", "labels", "embeddings"), self._frame)
        order = torch.sort(detections["scores"].detach().cpu(), descending=True, stable=True).indices
        boxes = detections["boxes"].detach().cpu().float()[order]
        scores = detections["scores"].detach().cpu()[order]
        keep = self._distinct(boxes, scores)
        order, boxes, scores = order[keep], boxes[keep], scores[keep]
        labels = detections["labels"].detach().cpu().long()[order]
        embeds = detections["embeddings"].detach().cpu().float()[order]
        ids = self._match(scores, labels, embeds)
        new = torch.nonzero((ids == -1) & (scores > self.config.init_score)).flatten()
        ids[new] = torch.arange(self._next_id, self._next_id + len(new))
        self._next_id += len(new)
        self._update_memo(ids, boxes, labels, embeds)
        self._frame += 1
        out = torch.full((n,), -1, dtype=torch.int64)
        out[order] = ids.clamp(min=-1)
        return out
