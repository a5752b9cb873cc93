"""Identity recovery after full occlusion: does a tracker give an object back its old id when it reappears?

CLEAR's IDSW, IDF1 and HOTA's AssA all blend re-identification after a long disappearance with every
other association error, so a tracker that never bridges a full occlusion can still score well. This
module isolates exactly that event. It works from MOTS ground truth alone: a GT id whose visible mask
is absent (or empty) for at least ``min_gap`` frames between two visible runs has been fully hidden.

Matching is CLEAR's (mask IoU >= 0.5, per class, preferring to continue the previous frame's match,
then Hungarian on IoU), so "the id before" and "the id after" are the ids CLEAR itself credits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, NamedTuple

import numpy as np
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment

from instseg.data.coco_json import mask_to_rle, segmentation_to_mask
from instseg.errors import InputError
from instseg.video.data.kitti_mots import IGNORE_CLASS, MotsRow, read_kitti_mots, read_mots_dir
from instseg.video.data.track_results import disjoint_by_score

EPS = np.finfo(float).eps
IOU_THRESHOLD = 0.5


class Frame(NamedTuple):
    """One class's objects in one frame: ids, masks and the GT x prediction mask IoU."""
    gt_ids: np.ndarray
    dt_ids: np.ndarray
    gt_rles: list[dict]
    dt_rles: list[dict]
    iou: np.ndarray


def read_mots_pair(gt_dir: str | Path, dt_dir: str | Path) -> tuple[dict[str, list[MotsRow]], dict[str, list[MotsRow]]]:
    """GT and result folders of `<seq>.txt`; a missing result file is an empty one (the tracker found nothing)."""
    gt_dir, dt_dir = Path(gt_dir), Path(dt_dir)
    for folder in (gt_dir, dt_dir):
        if not folder.is_dir():
            raise InputError("folder not found", folder)
    gt_seqs = read_mots_dir(gt_dir)
    if not gt_seqs:
        raise InputError("no <seq>.txt ground-truth files", gt_dir)
    for path in sorted(dt_dir.glob("*.txt")):
        if path.stem not in gt_seqs:
            raise InputError(f"result file for sequence '{path.stem}', which is not in the ground truth {gt_dir}", path)
    dt_seqs = {seq: read_kitti_mots(dt_dir / f"{seq}.txt") if (dt_dir / f"{seq}.txt").is_file() else []
               for seq in gt_seqs}
    return gt_seqs, dt_seqs


def sequence_length(seq: str, *row_lists: Iterable[MotsRow]) -> int:
    """Frames are indexed from 0, as in KITTI-MOTS; the sequence runs to the last frame either side mentions."""
    frames = [row.frame for rows in row_lists for row in rows]
    if frames and min(frames) < 0:
        raise InputError(f"negative frame index {min(frames)}", None, f"sequence '{seq}'")
    return max(frames, default=-1) + 1


def class_frames(gt_rows: Iterable[MotsRow], dt_rows: Iterable[MotsRow], class_id: int, num_frames: int) -> list[Frame]:
    """Group one class's rows by frame and compute mask IoU, the similarity every MOTS metric matches on."""
    gt: list[list[MotsRow]] = [[] for _ in range(num_frames)]
    dt: list[list[MotsRow]] = [[] for _ in range(num_frames)]
    for side, rows in ((gt, gt_rows), (dt, dt_rows)):
        for row in rows:
            if row.class_id == class_id:
                side[row.frame].append(row)
    frames = []
    for g, d in zip(gt, dt):
        g_rles, d_rles = [r.rle for r in g], [r.rle for r in d]
        iou = np.asarray(mask_utils.iou(g_rles, d_rles, [False] * len(d_rles)), dtype=float).reshape(len(g), len(d))
        frames.append(Frame(np.array([r.obj_id for r in g], dtype=int), np.array([r.obj_id for r in d], dtype=int),
                            g_rles, d_rles, iou))
    return frames


def clear_matches(frames: list[Frame]) -> list[dict[int, int]]:
    """Per frame, {gt id: predicted id} as CLEAR matches them: keep last frame's pairs when IoU allows, then max IoU.

    As in TrackEval, the "previous frame" memory survives frames where either side is empty.
    """
    previous: dict[int, int] = {}
    out = []
    for f in frames:
        if len(f.gt_ids) == 0 or len(f.dt_ids) == 0:
            out.append({})
            continue
        keep = np.array([[previous.get(g) == d for d in f.dt_ids] for g in f.gt_ids], dtype=float)
        score = 1000.0 * keep + f.iou
        score[f.iou < IOU_THRESHOLD - EPS] = 0.0
        rows, cols = linear_sum_assignment(-score)
        ok = score[rows, cols] > EPS
        matches = {int(f.gt_ids[r]): int(f.dt_ids[c]) for r, c in zip(rows[ok], cols[ok])}
        previous = matches
        out.append(matches)
    return out


def _visible_frames(frames: list[Frame]) -> dict[int, list[int]]:
    visible: dict[int, list[int]] = {}
    for t, f in enumerate(frames):
        for gt_id, rle in zip(f.gt_ids, f.gt_rles):
            if mask_utils.area(rle) > 0:
                visible.setdefault(int(gt_id), []).append(t)
    return visible


def recovery_events(frames: list[Frame], min_gap: int, grace: int) -> list[dict]:
    """Every hidden-for->=min_gap-frames gap of every GT id in one class of one sequence, with its outcome."""
    matches = clear_matches(frames)
    events = []
    for gt_id, seen in sorted(_visible_frames(frames).items()):
        for last, first in zip(seen, seen[1:]):
            if first - last - 1 < min_gap:
                continue
            before = next(((t, matches[t][gt_id]) for t in range(last, -1, -1) if gt_id in matches[t]), None)
            window = range(first, min(first + grace, len(frames)))
            after = next(((t, matches[t][gt_id]) for t in window if gt_id in matches[t]), None)
            if before is None:
                outcome = "never_matched"
            elif after is None:
                outcome = "missed"
            else:
                outcome = "recovered" if after[1] == before[1] else "swapped"
            events.append({"gt_id": gt_id, "hidden": (last + 1, first - 1), "before": before, "after": after,
                           "outcome": outcome})
    return events


def summarize_recovery(events: list[dict]) -> dict:
    """Counts and rate; events never matched before the gap cannot be recovered and are left out of the rate."""
    count = {k: sum(e["outcome"] == k for e in events) for k in ("recovered", "swapped", "missed", "never_matched")}
    n = count["recovered"] + count["swapped"] + count["missed"]
    return {"events": n, **count, "rate": count["recovered"] / n if n else None, "per_event": events}


def identity_recovery(
    gt_seqs: Mapping[str, list[MotsRow]],
    dt_seqs: Mapping[str, list[MotsRow]],
    min_gap: int,
    grace: int = 3,
    *,
    class_ids: Iterable[int] | None = None,
    ignore_class: int | None = IGNORE_CLASS,
) -> dict:
    """Share of full-occlusion events after which the tracker's id comes back unchanged.

    An event is a gap of >= ``min_gap`` frames between two visible runs of one GT id (classes ``class_ids``,
    default every GT class except ``ignore_class``). It is *recovered* when the first CLEAR match within
    ``grace`` frames of the reappearance carries the predicted id of the last CLEAR match before the gap,
    *swapped* when it carries another id, *missed* when nothing matches in the window. Events whose GT id
    was never matched before the gap are *never_matched*: no id existed to recover, so they are counted
    separately and excluded from ``events`` and from ``rate`` = recovered / events (None without events).
    A missing sequence in ``dt_seqs`` is an empty result.
    """
    if min_gap < 1 or grace < 1:
        raise InputError(f"min_gap and grace must be >= 1, got min_gap={min_gap}, grace={grace}")
    unknown = sorted(set(dt_seqs) - set(gt_seqs))
    if unknown:
        raise InputError(f"results for sequences not in the ground truth: {unknown}")
    if class_ids is None:
        class_ids = sorted({r.class_id for rows in gt_seqs.values() for r in rows} - {ignore_class})
    events = []
    for seq, gt_rows in sorted(gt_seqs.items()):
        dt_rows = dt_seqs.get(seq, [])
        n = sequence_length(seq, gt_rows, dt_rows)
        for c in class_ids:
            for e in recovery_events(class_frames(gt_rows, dt_rows, c, n), min_gap, grace):
                events.append({"seq": seq, "class_id": c, **e})
    return summarize_recovery(events)


def identity_recovery_dirs(gt_dir: str | Path, dt_dir: str | Path, min_gap: int, grace: int = 3, *,
                           class_ids: Iterable[int] | None = None, ignore_class: int | None = IGNORE_CLASS) -> dict:
    """:func:`identity_recovery` on folders of KITTI-MOTS `<seq>.txt` files."""
    gt_seqs, dt_seqs = read_mots_pair(gt_dir, dt_dir)
    return identity_recovery(gt_seqs, dt_seqs, min_gap, grace, class_ids=class_ids, ignore_class=ignore_class)


def vis_as_mots(gt: dict, results: list[dict]) -> tuple[dict[str, list[MotsRow]], dict[str, list[MotsRow]]]:
    """YouTube-VIS ground truth and results as MOTS sequences (keyed by video id): tracks numbered
    ``class * 1000 + k`` in order; each frame's result masks painted in descending score order, a
    pixel going to the highest-scoring result that covers it (MOTS forbids overlaps). Crowd ground
    truth is left out (it has no identity to recover)."""
    gt_seqs: dict[str, list[MotsRow]] = {str(v["id"]): [] for v in gt["videos"]}
    dt_seqs: dict[str, list[MotsRow]] = {str(v["id"]): [] for v in gt["videos"]}
    for k, ann in enumerate(a for a in gt["annotations"] if not a.get("iscrowd", 0)):
        obj = ann["category_id"] * 1000 + k + 1
        gt_seqs[str(ann["video_id"])] += [MotsRow(t, obj, ann["category_id"], rle)
                                          for t, rle in enumerate(ann["segmentations"]) if rle is not None]
    by_video: dict[str, list[tuple[int, dict]]] = {}
    for k, res in enumerate(results):
        by_video.setdefault(str(res["video_id"]), []).append((k, res))
    for seq, tracks in by_video.items():
        tracks.sort(key=lambda item: -item[1]["score"])
        for t in range(max(len(r["segmentations"]) for _, r in tracks)):
            present = [(k, r) for k, r in tracks if t < len(r["segmentations"]) and r["segmentations"][t] is not None]
            if not present:
                continue
            masks = np.stack([segmentation_to_mask(r["segmentations"][t], *r["segmentations"][t]["size"])
                              for _, r in present]).astype(bool)
            painted = disjoint_by_score(masks, np.array([r["score"] for _, r in present], dtype=float))
            dt_seqs[seq] += [MotsRow(t, r["category_id"] * 1000 + k + 1, r["category_id"], mask_to_rle(m))
                             for (k, r), m in zip(present, painted) if m.any()]
    return gt_seqs, dt_seqs


def identity_recovery_vis(gt: dict, results: list[dict], min_gap: int, grace: int = 3) -> dict:
    """:func:`identity_recovery` of YouTube-VIS results (each result is one predicted track)."""
    gt_seqs, dt_seqs = vis_as_mots(gt, results)
    return identity_recovery(gt_seqs, dt_seqs, min_gap, grace, class_ids=[c["id"] for c in gt["categories"]],
                             ignore_class=None)
