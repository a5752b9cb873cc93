"""A tracker's per-frame output turned into the two result formats the evaluators read:
YouTube-VIS results (one record per track over the whole video) and KITTI-MOTS rows.

Why two rules: YouTube-VIS scores a track as a whole, so a track takes the category its
detections vote for (score-weighted) and the mean of their scores; MOTS scores pixels per frame
and forbids overlapping masks, so each frame's tracked masks are painted in descending score
order, a pixel belonging to the highest-scoring mask that covers it (what MOTS submissions do).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from torch import Tensor

from instseg.data.coco_json import mask_to_rle

MOTS_MAX_INSTANCE = 999  # KITTI-MOTS ids are class * 1000 + instance


def _track_frames(frames: Sequence[tuple[dict[str, Tensor], Tensor]]) -> dict[int, list[tuple[int, int]]]:
    """track id -> [(frame index, detection index)]"""
    tracks: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for t, (_, ids) in enumerate(frames):
        for k, track_id in enumerate(int(v) for v in ids):
            if track_id >= 0:
                tracks[track_id].append((t, k))
    return dict(tracks)


def track_categories(frames: Sequence[tuple[dict[str, Tensor], Tensor]]) -> dict[int, tuple[int, float]]:
    """track id -> (category by score-weighted vote, mean detection score)."""
    out = {}
    for track_id, members in _track_frames(frames).items():
        votes: dict[int, float] = defaultdict(float)
        scores = []
        for t, k in members:
            det = frames[t][0]
            votes[int(det["labels"][k])] += float(det["scores"][k])
            scores.append(float(det["scores"][k]))
        category = max(sorted(votes), key=lambda c: votes[c])
        out[track_id] = (category, float(np.mean(scores)))
    return out


def ytvis_results(video_id: int, frames: Sequence[tuple[dict[str, Tensor], Tensor]]) -> list[dict]:
    """YouTube-VIS result records ``{video_id, category_id, score, segmentations, track_id}`` of one
    video, ``segmentations`` holding an RLE or None per frame (``track_id`` is ignored by the
    official API and kept for the MOTS rows and the widgets)."""
    categories = track_categories(frames)
    records = []
    for track_id, members in sorted(_track_frames(frames).items()):
        segmentations: list[dict | None] = [None] * len(frames)
        for t, k in members:
            segmentations[t] = mask_to_rle(frames[t][0]["masks"][k].numpy().astype(np.uint8))
        category, score = categories[track_id]
        records.append({"video_id": int(video_id), "category_id": category, "score": score,
                        "segmentations": segmentations, "track_id": track_id})
    return records


def mots_rows(frames: Sequence[tuple[dict[str, Tensor], Tensor]]) -> list[tuple[int, int, int, dict]]:
    """KITTI-MOTS rows ``(frame, class * 1000 + instance, class, rle)`` of one video: track ids
    renumbered 1, 2, ... in order of appearance, overlaps given to the higher score."""
    categories = track_categories(frames)
    instance = {track_id: n + 1 for n, track_id in enumerate(sorted(_track_frames(frames)))}
    if len(instance) > MOTS_MAX_INSTANCE:
        raise ValueError(f"{len(instance)} tracks in one video; KITTI-MOTS ids hold at most {MOTS_MAX_INSTANCE}")
    rows = []
    for t, (det, ids) in enumerate(frames):
        order = [k for k in np.argsort(-det["scores"].numpy(), kind="stable") if int(ids[k]) >= 0]
        taken = np.zeros(tuple(det["masks"].shape[-2:]), dtype=bool)
        for k in order:
            mask = det["masks"][k].numpy() & ~taken
            taken |= mask
            if not mask.any():
                continue
            track_id = int(ids[k])
            category = categories[track_id][0]
            rows.append((t, category * 1000 + instance[track_id], category, mask_to_rle(mask.astype(np.uint8))))
    return rows
