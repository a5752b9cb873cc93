"""Trackers run on cached detections and scored by every video metric at once: YouTube-VIS AP/AR
(and AP per OVIS occlusion level), MOTS metrics through TrackEval, and identity recovery after
full occlusion; per video too, the unit of the paired intervals between trackers.

Why recovery is filtered here: from MOTS ground truth alone a gap in a track is any stretch
without a visible mask, which on our benchmark also includes an object leaving the frame and
coming back. The benchmark's annotations say which gaps are full occlusions (the amodal mask is
in the frame while the visible one is empty), so the headline recovery counts those only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn

from instseg.video.data.kitti_mots import MotsRow
from instseg.video.data.track_results import TrackedVideo
from instseg.video.evaluation.mots import evaluate_mots_sequences
from instseg.video.evaluation.recovery import summarize_recovery
from instseg.video.evaluation.ytvis import ap_by_occlusion_vis, evaluate_vis
from instseg.video.models.inference import track_frames
from instseg.video.models.trackers import Tracker
from instseg.video.tracking.detection_cache import VideoFrames

MOTS_METRICS = ("HOTA", "DetA", "AssA", "MOTSA", "MOTSP", "sMOTSA", "IDF1", "IDSW")
VIS_METRICS = ("AP", "AP50", "AP75", "AR1", "AR10")


def frame_ap(gt: dict, videos: Sequence[VideoFrames]) -> dict[str, float | None]:
    """The detector's COCO mask AP/AR (fractions) with every frame an image and the visible masks
    its ground truth: how well the image detector transfers to the frames, before any linking."""
    from instseg.data.coco_json import mask_to_rle
    from instseg.evaluation import evaluate

    known = {v["id"]: v for v in gt["videos"]}
    tracks: dict[int, list[dict]] = {}
    for ann in gt["annotations"]:
        tracks.setdefault(ann["video_id"], []).append(ann)
    images, annotations, results = [], [], []
    for video in videos:
        record = known[video.video_id]
        for t, det in enumerate(video.detections):
            image_id = len(images) + 1
            images.append({"id": image_id, "height": record["height"], "width": record["width"],
                           "file_name": record["file_names"][t]})
            for a in tracks.get(video.video_id, []):
                if a["segmentations"][t] is not None:
                    annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                        "category_id": a["category_id"], "segmentation": a["segmentations"][t],
                                        "area": a["areas"][t], "bbox": a["bboxes"][t], "iscrowd": a.get("iscrowd", 0)})
            results += [{"image_id": image_id, "category_id": int(det.labels[k]), "score": float(det.scores[k]),
                         "segmentation": mask_to_rle(det.masks[k].numpy().astype("uint8"))} for k in range(len(det))]
    coco = {"images": images, "annotations": annotations, "categories": gt["categories"]}
    metrics = evaluate(coco, results, iou_type="segm")
    return {k: None if metrics[k] is None else metrics[k] / 100 for k in ("AP", "AP50", "AP75", "AR1", "AR10")}


def track_videos(videos: Sequence[VideoFrames], tracker: Tracker, embed_head: nn.Module | None = None
                 ) -> dict[int, TrackedVideo]:
    """Each video's tracks (video id -> TrackedVideo), the tracker reset per video."""
    out = {}
    with torch.no_grad():
        for video in videos:
            tracked = TrackedVideo()
            for det, ids in track_frames(video.detections, tracker, embed_head):
                tracked.add(det.as_dict(), ids)
            out[video.video_id] = tracked
    return out


@dataclass
class TrackingScores:
    """What one tracker scored: the headline ``summary`` (fractions; IDSW and event counts as
    integers), per video (HOTA, MOTSA, IDF1, IDSW: class averages within the video), every
    identity-recovery event with its outcome, and the tracks themselves (for the widgets)."""

    summary: dict[str, Any]
    per_video: pd.DataFrame
    events: pd.DataFrame
    vis: dict[str, Any]
    mots: dict[str, Any]
    tracked: Mapping[int, TrackedVideo]


def _occluded_in_frame(gt: dict) -> dict[tuple[str, int], set[int]]:
    """(video name, MOTS object id) -> frames where the object is in the frame but fully hidden."""
    names = {v["id"]: v["name"] for v in gt["videos"]}
    out = {}
    for ann in gt["annotations"]:
        hidden = {t for t, (seg, amodal) in enumerate(zip(ann["segmentations"], ann["amodal_segmentations"]))
                  if seg is None and amodal is not None}
        out[(names[ann["video_id"]], ann["category_id"] * 1000 + ann["track_id"])] = hidden
    return out


def _events_table(events: list[dict], gt: dict) -> pd.DataFrame:
    """One row per recovery event; ``occlusion`` says every hidden frame was a full occlusion."""
    hidden = _occluded_in_frame(gt) if gt["annotations"] and "amodal_segmentations" in gt["annotations"][0] else None
    rows = []
    for e in events:
        first, last = e["hidden"]
        frames = set(range(first, last + 1))
        occlusion = hidden is not None and frames <= hidden.get((e["seq"], e["gt_id"]), set())
        rows.append({"video": e["seq"], "class_id": e["class_id"], "gt_id": e["gt_id"], "first_hidden": first,
                     "hidden_frames": last - first + 1, "outcome": e["outcome"], "occlusion": occlusion})
    return pd.DataFrame(rows, columns=["video", "class_id", "gt_id", "first_hidden", "hidden_frames", "outcome",
                                       "occlusion"])


def evaluate_tracking(gt: dict, tracked: Mapping[int, TrackedVideo], gt_mots: Mapping[str, list[MotsRow]],
                      min_gap: int, grace: int = 3) -> TrackingScores:
    """Score ``tracked`` (video id -> tracks) against ``gt`` (YouTube-VIS, our benchmark's extras
    optional) and ``gt_mots`` (video name -> KITTI-MOTS rows). Recovery counts gaps of at least
    ``min_gap`` hidden frames re-found within ``grace`` frames; with the benchmark's amodal
    annotations only full occlusions count (``recovery_all_gaps`` keeps every gap)."""
    names = {v["id"]: v["name"] for v in gt["videos"]}
    class_names = {int(c["id"]): str(c["name"]) for c in gt["categories"]}
    results = [r for video_id, t in sorted(tracked.items()) for r in t.ytvis_results(video_id)]
    dt_mots = {names[video_id]: [MotsRow(*row) for row in t.mots_rows()] for video_id, t in tracked.items()}
    vis = evaluate_vis(gt, results)
    vis["by_occlusion"] = ap_by_occlusion_vis(gt, results)
    # a category with neither ground truth nor predictions in the split is left out of the class
    # average (TrackEval's own switch), not averaged in as 0
    mots = evaluate_mots_sequences(gt_mots, dt_mots, class_names, ignore_class=None, min_gap=min_gap, grace=grace,
                                   ignore_empty_classes=True, per_sequence=True)
    events = _events_table(mots["identity_recovery"]["per_event"], gt)
    occlusion_events = [e for e, keep in zip(mots["identity_recovery"]["per_event"], events["occlusion"]) if keep]
    recovery = summarize_recovery(occlusion_events)
    summary: dict[str, Any] = {k: vis[k] for k in VIS_METRICS}
    summary |= {k: mots["mean"][k] for k in MOTS_METRICS}
    summary |= {f"AP_{level}": row["AP"] for level, row in vis["by_occlusion"].items()}
    summary |= {"recovery": recovery["rate"], "recovery_events": recovery["events"],
                "recovery_all_gaps": mots["identity_recovery"]["rate"]}
    per_video = pd.DataFrame([{"video": name, **{k: m[k] for k in ("HOTA", "MOTSA", "IDF1", "IDSW")}}
                              for name, m in mots["per_sequence"].items()]).set_index("video")
    return TrackingScores(summary, per_video, events, vis, mots, dict(tracked))
