"""Does motion alone give identity after a full occlusion away? A diagnostic of the benchmark.

Identity recovery is the ability the video tables are about, so the benchmark must not let a
tracker pass it without looking: if every object kept a fixed velocity, extrapolating its box
through the occlusion would land on it every time. Per full-occlusion event (a track in the frame
but fully hidden for at least ``min_gap`` frames, visible before and after) this extrapolates the
last visible box at constant velocity (from the last two visible frames) to the reappearance frame
and asks whether it overlaps the true box at IoU >= 0.5 and overlaps it more than any other
visible object there. The share of events so solved is how far position and motion alone go.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


def occlusion_events(ann: dict, min_gap: int) -> list[tuple[int, int]]:
    """(last visible frame before, first visible frame after) of each full occlusion of one track:
    every frame between has the amodal mask in the frame and no visible mask."""
    visible = [t for t, seg in enumerate(ann["segmentations"]) if seg is not None]
    events = []
    for before, after in zip(visible, visible[1:]):
        gap = range(before + 1, after)
        if len(gap) >= min_gap and all(ann["amodal_segmentations"][t] is not None for t in gap):
            events.append((before, after))
    return events


def motion_shortcut(gt: dict, min_gap: int, boxes: str = "bboxes") -> dict[str, Any]:
    """Events, the share a constant-velocity box extrapolation re-finds (``solved``), the share
    whose extrapolated box is nearest the right object but under IoU 0.5 (``nearest_only``), and
    the IoU of each extrapolation. ``boxes``: ``bboxes`` (visible: what a tracker sees; the box
    shrinks as the object slides behind its occluder) or ``amodal_bboxes`` (the whole object's:
    an oracle's upper bound on what motion alone could do)."""
    by_video: dict[int, list[dict]] = {}
    for ann in gt["annotations"]:
        by_video.setdefault(ann["video_id"], []).append(ann)
    ious, solved, nearest = [], 0, 0
    for anns in by_video.values():
        for ann in anns:
            for before, after in occlusion_events(ann, min_gap):
                box = np.asarray(ann[boxes][before], float)
                earlier = [t for t in range(before) if ann[boxes][t] is not None]
                velocity = np.zeros(2)
                if earlier:
                    prev = np.asarray(ann[boxes][earlier[-1]], float)
                    velocity = (box[:2] + box[2:] / 2 - prev[:2] - prev[2:] / 2) / (before - earlier[-1])
                guess = np.concatenate([box[:2] + velocity * (after - before), box[2:]])
                targets = [ann[boxes][after]] + [o[boxes][after] for o in anns
                                                 if o is not ann and o[boxes][after] is not None]
                own, *others = np.asarray(mask_utils.iou([guess.tolist()], targets, [0] * len(targets))).ravel()
                own = float(own)
                best = own > max(others, default=0.0)
                ious.append(own)
                solved += bool(best and own >= 0.5)
                nearest += bool(best and own < 0.5)
    n = len(ious)
    return {"events": n, "solved": solved / n if n else None, "nearest_only": nearest / n if n else None,
            "iou_mean": float(np.mean(ious)) if n else None, "ious": ious}
