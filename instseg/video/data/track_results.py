"""A tracker's per-frame output turned into the two result formats the evaluators read:
YouTube-VIS results (one record per track over the whole video) and KITTI-MOTS rows.

Why two rules: YouTube-VIS scores a track as a whole, so a track takes the category its
detections vote for (score-weighted) and the mean of their scores; MOTS scores pixels per frame
and forbids overlapping masks, so each frame's tracked masks are painted in descending score
order, a pixel belonging to the highest-scoring mask that covers it (what MOTS submissions do).

Why streaming: frames are added one at a time and kept as RLE only, so a long, large video is
never held in memory as masks.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from instseg.data.coco_json import mask_to_rle

if TYPE_CHECKING:
    from torch import Tensor

MOTS_MAX_INSTANCE = 999  # KITTI-MOTS ids are class * 1000 + instance


def disjoint_by_score(masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Masks [N, H, W] made disjoint as MOTS requires: a pixel stays with the highest-scoring mask
    that covers it (equal scores: the earlier mask)."""
    out = np.zeros(masks.shape, dtype=bool)
    taken = np.zeros(masks.shape[1:], dtype=bool)
    for k in np.argsort(-scores, kind="stable"):
        out[k] = masks[k] & ~taken
        taken |= out[k]
    return out


@dataclass(frozen=True)
class _Member:
    """One tracked detection: its frame, label, score, mask and its MOTS (overlap-free) mask."""

    frame: int
    label: int
    score: float
    rle: dict
    painted: dict | None  # None when higher-scoring masks cover it entirely


class TrackedVideo:
    """Accumulates ``(detections, track ids)`` frame by frame (ids < 0: not output)."""

    def __init__(self) -> None:
        self.length = 0
        self._tracks: dict[int, list[_Member]] = defaultdict(list)

    def add(self, detections: dict[str, Tensor], ids: Tensor) -> None:
        tracked = [k for k, track_id in enumerate(ids.tolist()) if track_id >= 0]
        masks = detections["masks"].bool().cpu().numpy()[tracked]
        scores = detections["scores"].float().cpu().numpy()[tracked]
        for k, mask, painted in zip(tracked, masks, disjoint_by_score(masks, scores)):
            self._tracks[int(ids[k])].append(_Member(
                self.length, int(detections["labels"][k]), float(detections["scores"][k]),
                mask_to_rle(mask.astype(np.uint8)), mask_to_rle(painted.astype(np.uint8)) if painted.any() else None))
        self.length += 1

    def categories(self) -> dict[int, tuple[int, float]]:
        """track id -> (category by score-weighted vote, mean detection score)."""
        out = {}
        for track_id, members in self._tracks.items():
            votes: dict[int, float] = defaultdict(float)
            for m in members:
                votes[m.label] += m.score
            out[track_id] = (max(sorted(votes), key=lambda c: votes[c]), float(np.mean([m.score for m in members])))
        return out

    def ytvis_results(self, video_id: int) -> list[dict]:
        """YouTube-VIS result records ``{video_id, category_id, score, segmentations, track_id}``,
        ``segmentations`` holding an RLE or None per frame (``track_id`` is ignored by the
        official API and kept for the widgets)."""
        categories = self.categories()
        records = []
        for track_id in sorted(self._tracks):
            segmentations: list[dict | None] = [None] * self.length
            for m in self._tracks[track_id]:
                segmentations[m.frame] = m.rle
            category, score = categories[track_id]
            records.append({"video_id": int(video_id), "category_id": category, "score": score,
                            "segmentations": segmentations, "track_id": track_id})
        return records

    def mots_rows(self) -> list[tuple[int, int, int, dict]]:
        """KITTI-MOTS rows ``(frame, class * 1000 + instance, class, rle)`` sorted by frame and id:
        track ids renumbered 1, 2, ... in id order, overlaps given to the higher score."""
        if len(self._tracks) > MOTS_MAX_INSTANCE:
            raise ValueError(f"{len(self._tracks)} tracks in one video; KITTI-MOTS ids hold at most "
                             f"{MOTS_MAX_INSTANCE}")
        categories = self.categories()
        rows = []
        for instance, track_id in enumerate(sorted(self._tracks), start=1):
            category = categories[track_id][0]
            rows += [(m.frame, category * 1000 + instance, category, m.painted)
                     for m in self._tracks[track_id] if m.painted is not None]
        return sorted(rows, key=lambda row: (row[0], row[1]))
