"""The frozen detector's output on every frame of a set of videos, computed once and shared by
every tracker, seed and evaluation that reads it.

Why a cache: the baselines differ only in how they link detections, so they must see the very
same detections (the frozen-detector protocol of the image work), and a detector pass is the
expensive part of tracking. Training frames also keep the ROI features of their ground-truth
boxes and jittered copies, with the track id each ROI is assigned: the key/reference pairs an
embedding head trains on, as QDTrack trains on proposals around ground truth.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import box_convert

from instseg.data.coco_json import segmentation_to_mask
from instseg.engine.seeding import derive_seed
from instseg.errors import InputError
from instseg.experiments.frozen_heads.roi_cache import jitter_boxes
from instseg.video.data.frames import read_image
from instseg.video.models.inference import FrameDetections, detect_frames
from instseg.video.models.trackers.embedding import assign_track_ids

JITTER_PER_GT = 4  # jittered copies of each ground-truth box among a training frame's ROIs
TRAIN_MIN_SCORE = 0.3  # a training frame keeps the detections a tracker would link (QDTrack's object score)


@dataclass
class FrameTruth:
    """One frame's ground truth for tracking: visible boxes (xyxy), the track of each and, when
    asked for, the visible masks [N, H, W] (bool)."""

    boxes: Tensor
    track_ids: Tensor
    masks: Tensor | None = None


@dataclass
class VideoFrames:
    """One video's detections per frame (and, for training, its ROIs with their assigned ids)."""

    video_id: int
    name: str
    detections: list[FrameDetections]
    truth: list[FrameTruth] = field(default_factory=list)
    roi_track_ids: list[Tensor] = field(default_factory=list)  # per frame: id, -1 background, -2 ignored

    def __len__(self) -> int:
        return len(self.detections)


def frame_truth(gt: dict, video_id: int, with_masks: bool = False) -> list[FrameTruth]:
    """Per frame of ``video_id``: its visible boxes and their tracks (the annotation id, unique per
    track in YouTube-VIS data), and with ``with_masks`` their visible masks."""
    video = next((v for v in gt["videos"] if v["id"] == video_id), None)
    if video is None:
        raise InputError(f"video {video_id} is not in the ground truth")
    h, w = video["height"], video["width"]
    boxes: list[list[list[float]]] = [[] for _ in range(video["length"])]
    ids: list[list[int]] = [[] for _ in range(video["length"])]
    masks: list[list[np.ndarray]] = [[] for _ in range(video["length"])]
    for ann in gt["annotations"]:
        if ann["video_id"] != video_id or ann.get("iscrowd", 0):
            continue
        for t, box in enumerate(ann["bboxes"]):
            if box is not None and box[2] > 0 and box[3] > 0:
                boxes[t].append(box)
                ids[t].append(int(ann["id"]))
                if with_masks:
                    masks[t].append(segmentation_to_mask(ann["segmentations"][t], h, w).astype(bool))
    return [FrameTruth(box_convert(torch.tensor(b, dtype=torch.float32).reshape(-1, 4), "xywh", "xyxy"),
                       torch.tensor(i, dtype=torch.int64),
                       torch.from_numpy(np.stack(m)) if m else torch.zeros((0, h, w), dtype=torch.bool)
                       if with_masks else None)
            for b, i, m in zip(boxes, ids, masks)]


def read_frames(frames_root: str | Path, video: dict) -> Iterator[np.ndarray]:
    """The RGB frames of a YouTube-VIS ``video`` record, in order."""
    root = Path(frames_root)
    for t, name in enumerate(video["file_names"]):
        path = root / name
        if not path.is_file():
            raise InputError(f"frame {t} of video {video['id']} is missing", path)
        yield read_image(path)


def training_rois(truth: Sequence[FrameTruth], size: tuple[int, int], seed: int, video_id: int
                  ) -> list[tuple[Tensor, Tensor]]:
    """Per frame: its ground-truth boxes and ``JITTER_PER_GT`` jittered copies of each, with the
    index of each box's ground truth (its parent)."""
    out = []
    for t, frame in enumerate(truth):
        generator = torch.Generator().manual_seed(derive_seed(seed, video_id, t))
        jittered, parents = jitter_boxes(frame.boxes, JITTER_PER_GT, size, generator)
        out.append((torch.cat([frame.boxes, jittered]), torch.cat([torch.arange(len(frame.boxes)), parents])))
    return out


def detect_videos(detector: nn.Module, label_to_category_id: dict[int, int], gt: dict, frames_root: str | Path,
                  video_ids: Sequence[int] | None = None, with_features: bool = False, training: bool = False,
                  seed: int = 0, batch_size: int = 8) -> list[VideoFrames]:
    """Detections on every frame of the videos ``video_ids`` (default: all) of ``gt``. With
    ``training``, ROI features of each frame's detections scoring at least ``TRAIN_MIN_SCORE``,
    its ground-truth boxes and jittered copies, each assigned a track id by QDTrack's IoU rule; the
    masks are then dropped (a head trains on features only). Features are stored as float16."""
    videos = {v["id"]: v for v in gt["videos"]}
    out = []
    for video_id in (video_ids if video_ids is not None else sorted(videos)):
        video = videos[video_id]
        truth = frame_truth(gt, video_id)
        extras = [boxes for boxes, _ in training_rois(truth, (video["height"], video["width"]), seed, video_id)
                  ] if training else None
        frames = []
        ids = []
        for t, det in enumerate(detect_frames(detector, read_frames(frames_root, video), label_to_category_id,
                                              with_features=with_features or training, batch_size=batch_size,
                                              extra_boxes=extras)):
            if det.roi_features is not None:
                det.roi_features = det.roi_features.half()
            if training:
                keep = torch.cat([det.scores >= TRAIN_MIN_SCORE, torch.ones(len(extras[t]), dtype=torch.bool)])
                det = FrameDetections(det.boxes[keep[:len(det)]], det.scores[keep[:len(det)]],
                                      det.labels[keep[:len(det)]], det.masks[:0], det.roi_features[keep])
                rois = torch.cat([det.boxes, extras[t]])
                ids.append(assign_track_ids(rois, truth[t].boxes, truth[t].track_ids))
            frames.append(det)
        out.append(VideoFrames(video_id, video.get("name", str(video_id)), frames, truth if training else [], ids))
    return out

