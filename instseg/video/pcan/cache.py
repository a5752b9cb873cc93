"""The frozen detector's FPN maps, detections and coarse masks per frame, computed once and read
by every PCAN variant, seed and evaluation.

Why FPN maps and not ROI features: the frame-level module rewrites the maps before any ROI is
pooled, so a variant's ROI features depend on its own module; only the detector's outputs
(boxes, scores, labels, its 28x28 coarse mask logits) are shared, which keeps every variant on the
very same detections (the frozen-detector protocol). Training frames also keep QDTrack-style ROIs
(detections scoring >= ``TRAIN_MIN_SCORE``, ground-truth boxes, jittered copies) with their track
ids, coarse logits, and for ROIs matched to a track the 28x28 targets of BCNet's head (visible mask,
its boundary, occluders by BCNet's box rule, their boundary).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models.detection.transform import resize_boxes

from instseg.models.detectors import mask_branch_of
from instseg.models.mask_heads.targets import mask_head_targets
from instseg.video.models.inference import FrameDetections, detect_frames
from instseg.video.models.trackers.embedding import assign_track_ids
from instseg.video.tracking.detection_cache import TRAIN_MIN_SCORE, FrameTruth, frame_truth, read_frames, training_rois

TARGET_KEYS = ("mask", "boundary", "occluder_mask", "occluder_boundary")


@dataclass
class CachedFrame:
    """One frame: FPN maps (float16 [C, h, w] by level name), the size they were computed at, the
    detections (masks pasted to the frame) with their coarse logits [N, 28, 28]; for training also
    ``rois`` [M, 4] (frame coordinates), their labels, track ids (-1 background, -2 ignored),
    coarse logits, the index of each ground-truth track's own box among them (``truth_rois``,
    track id -> ROI row) and targets [M, 28, 28] bool (meaningful where ``roi_track_ids >= 0``)."""

    levels: dict[str, Tensor]
    feature_size: tuple[int, int]
    detections: FrameDetections
    detection_logits: Tensor
    rois: Tensor | None = None
    roi_labels: Tensor | None = None
    roi_track_ids: Tensor | None = None
    roi_logits: Tensor | None = None
    truth_rois: dict[int, int] | None = None
    targets: dict[str, Tensor] | None = None


@dataclass
class CachedVideo:
    video_id: int
    name: str
    size: tuple[int, int]  # frame height, width
    frames: list[CachedFrame]

    def __len__(self) -> int:
        return len(self.frames)


def coarse_logits(detector: nn.Module, levels: dict[str, Tensor], feature_size: tuple[int, int], boxes: Tensor,
                  labels: Tensor, frame_size: tuple[int, int]) -> Tensor:
    """The detector's own 28x28 mask logits [N, 28, 28] for ``boxes`` (frame coordinates) of
    detector ``labels`` (contiguous, as it predicts them): its mask branch on its own maps."""
    branch = mask_branch_of(detector)
    if len(boxes) == 0:
        return boxes.new_zeros((0, 28, 28))
    scaled = resize_boxes(boxes, list(frame_size), list(feature_size)) if feature_size != frame_size else boxes
    maps = {name: f[None].float() for name, f in levels.items()}
    with torch.no_grad():
        logits = branch.raw_outputs(maps, [feature_size], [{"boxes": scaled, "labels": labels}])["mask"]
    return logits[:, 0]


def _add_training_rois(frame: CachedFrame, truth: FrameTruth, extras: Tensor, parents: Tensor,
                       labels: Tensor, truth_labels: Tensor, extra_logits: Tensor) -> None:
    """The training ROIs of ``frame``: its detections scoring >= ``TRAIN_MIN_SCORE``, then
    ``extras`` (the truth's own boxes, then jittered copies; ``parents``: each one's ground truth)."""
    keep = frame.detections.scores >= TRAIN_MIN_SCORE
    frame.rois = torch.cat([frame.detections.boxes[keep], extras])
    frame.roi_labels = torch.cat([labels[keep], truth_labels[parents]])
    frame.roi_logits = torch.cat([frame.detection_logits[keep], extra_logits])
    frame.roi_track_ids = assign_track_ids(frame.rois, truth.boxes, truth.track_ids)
    offset = int(keep.sum())
    frame.truth_rois = {int(k): offset + n for n, k in enumerate(truth.track_ids.tolist())}
    row = {int(k): n for n, k in enumerate(truth.track_ids.tolist())}
    matched = torch.tensor([row.get(int(k), 0) for k in frame.roi_track_ids.tolist()], dtype=torch.int64)
    if len(truth.boxes):
        targets = mask_head_targets(truth.masks, truth.boxes, frame.rois, matched, 28, occluder="reference")
        frame.targets = {k: targets[k].bool() for k in TARGET_KEYS}
    else:
        frame.targets = {k: torch.zeros((len(frame.rois), 28, 28), dtype=torch.bool) for k in TARGET_KEYS}


def cache_videos(detector: nn.Module, label_to_category_id: dict[int, int], gt: dict, frames_root: str | Path,
                 video_ids: Sequence[int] | None = None, training: bool = False, seed: int = 0,
                 batch_size: int = 8) -> list[CachedVideo]:
    """Every frame of ``video_ids`` (default: all) of ``gt`` through the frozen ``detector`` once;
    with ``training``, also the training ROIs and their targets. Detection labels are category ids;
    ``roi_labels`` are the detector's contiguous labels."""
    category_to_label = {c: label for label, c in label_to_category_id.items()}
    videos = {v["id"]: v for v in gt["videos"]}
    out = []
    for video_id in (video_ids if video_ids is not None else sorted(videos)):
        video = videos[video_id]
        size = (video["height"], video["width"])
        truth = frame_truth(gt, video_id, with_masks=training)
        extras = training_rois(truth, size, seed, video_id) if training else None
        label_of = {int(a["id"]): category_to_label[a["category_id"]] for a in gt["annotations"]
                    if a["video_id"] == video_id}
        frames = []
        for t, det in enumerate(detect_frames(detector, read_frames(frames_root, video), label_to_category_id,
                                              batch_size=batch_size, keep_levels=True)):
            if training:
                truth_labels = torch.tensor([label_of[int(k)] for k in truth[t].track_ids], dtype=torch.int64)
                frame, labels, extra_logits = _cached_frame(detector, det, category_to_label, size, extras[t][0],
                                                            truth_labels[extras[t][1]])
                _add_training_rois(frame, truth[t], extras[t][0], extras[t][1], labels, truth_labels, extra_logits)
            else:
                frame = _cached_frame(detector, det, category_to_label, size)[0]
            frames.append(frame)
        out.append(CachedVideo(video_id, video.get("name", str(video_id)), size, frames))
    return out


def _cached_frame(detector: nn.Module, det: FrameDetections, category_to_label: dict[int, int],
                  size: tuple[int, int], extra_boxes: Tensor | None = None, extra_labels: Tensor | None = None
                  ) -> tuple[CachedFrame, Tensor, Tensor]:
    """``det`` (from ``detect_frames(keep_levels=True)``, its maps moved into the frame) as a cached
    frame, with its detections' contiguous labels and the coarse logits of ``extra_boxes``."""
    levels, det.levels = det.levels, None
    labels = torch.tensor([category_to_label[int(c)] for c in det.labels], dtype=torch.int64)
    boxes, box_labels = det.boxes, labels
    if extra_boxes is not None:
        boxes, box_labels = torch.cat([boxes, extra_boxes]), torch.cat([labels, extra_labels])
    logits = coarse_logits(detector, levels, det.feature_size, boxes, box_labels, size).half()
    frame = CachedFrame({k: v.half() for k, v in levels.items()}, det.feature_size, det, logits[:len(det)])
    return frame, labels, logits[len(det):]


def stream_frames(detector: nn.Module, label_to_category_id: dict[int, int], frames: Iterable[np.ndarray],
                  batch_size: int = 8) -> Iterator[CachedFrame]:
    """Inference frames of any video (RGB arrays), one at a time: what PCAN reads at test time
    (``instseg track`` on a user's video); detection labels are category ids."""
    category_to_label = {c: label for label, c in label_to_category_id.items()}
    for det in detect_frames(detector, frames, label_to_category_id, batch_size=batch_size, keep_levels=True):
        yield _cached_frame(detector, det, category_to_label, tuple(det.masks.shape[-2:]))[0]
