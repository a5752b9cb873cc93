"""Tracking by detection on a stream of frames: a frozen image detector, optionally ROI features
for an embedding head, and a tracker, frame by frame.

Why hooks: the detector is one of the image work's torchvision models, unchanged. Its backbone's
FPN levels (and the size its transform resized each frame to) are caught by forward hooks during
the ordinary ``model(images)`` call, so the same detections come out as ``instseg predict``
writes, and the embedding head pools its 7x7 ROI features from the very features the detector
used, without a second backbone pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import MultiScaleRoIAlign

from instseg.models.detectors import detector_parts

EMBED_ROI_SIZE = 7  # QDTrack's embedding head reads 7x7 RoIAlign features


@dataclass
class FrameDetections:
    """One frame's detections (boxes xyxy, scores, category ids, masks HxW bool) and, when asked
    for, the 7x7 ROI features [N, C, 7, 7] of its boxes."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor  # category ids (the dataset's), not the detector's contiguous labels
    masks: Tensor
    roi_features: Tensor | None = None
    levels: dict[str, Tensor] | None = None  # with ``keep_levels``: the frame's FPN maps [C, h, w] ...
    feature_size: tuple[int, int] | None = None  # ... and the size the transform resized the frame to

    def as_dict(self) -> dict[str, Tensor]:
        return {"boxes": self.boxes, "scores": self.scores, "labels": self.labels, "masks": self.masks}

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


class _FeatureCatcher:
    """Forward hooks that keep the backbone's output and the transformed image sizes of the last call."""

    def __init__(self, detector: nn.Module) -> None:
        transform, backbone, _ = detector_parts(detector)
        self.features: dict[str, Tensor] = {}
        self.sizes: list[tuple[int, int]] = []
        self._handles = [backbone.register_forward_hook(self._keep_features),
                         transform.register_forward_hook(self._keep_sizes)]

    def _keep_features(self, module: nn.Module, inputs: Any, output: dict[str, Tensor]) -> None:
        self.features = dict(output)

    def _keep_sizes(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.sizes = [tuple(s) for s in output[0].image_sizes]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def embedding_pooler(detector: nn.Module) -> MultiScaleRoIAlign:
    """A 7x7 RoIAlign over the same FPN levels the detector's mask branch reads."""
    _, _, mask_pool = detector_parts(detector)
    return MultiScaleRoIAlign(list(mask_pool.featmap_names), EMBED_ROI_SIZE, sampling_ratio=2)


def _to_tensor(frame: np.ndarray) -> Tensor:
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"a frame must be HxWx3 RGB, got shape {frame.shape}")
    return torch.from_numpy(np.array(frame, dtype=np.float32)).permute(2, 0, 1).div_(255.0)


@torch.no_grad()
def detect_frames(detector: nn.Module, frames: Iterable[np.ndarray], label_to_category_id: dict[int, int],
                  with_features: bool = False, batch_size: int = 8, mask_threshold: float = 0.5,
                  extra_boxes: Iterable[Tensor] | None = None, keep_levels: bool = False) -> Iterator[FrameDetections]:
    """Detections of every frame, in order. With ``with_features``, also the 7x7 ROI features of
    each detection, and of ``extra_boxes`` (one [M, 4] tensor per frame, original coordinates;
    appended after the detections: the training ROIs of an embedding head). With ``keep_levels``,
    also the frame's FPN maps (what a video model that re-pools ROIs from its own features reads)."""
    detector.eval()
    catcher = _FeatureCatcher(detector) if with_features or keep_levels else None
    pooler = embedding_pooler(detector) if with_features else None
    extras = iter(extra_boxes) if extra_boxes is not None else None
    try:
        batch: list[np.ndarray] = []
        for frame in frames:
            batch.append(frame)
            if len(batch) == batch_size:
                yield from _detect_batch(detector, batch, label_to_category_id, catcher, pooler, extras, mask_threshold,
                                         keep_levels)
                batch = []
        if batch:
            yield from _detect_batch(detector, batch, label_to_category_id, catcher, pooler, extras, mask_threshold,
                                     keep_levels)
    finally:
        if catcher is not None:
            catcher.remove()


def _detect_batch(detector: nn.Module, frames: list[np.ndarray], label_to_category_id: dict[int, int],
                  catcher: _FeatureCatcher | None, pooler: MultiScaleRoIAlign | None,
                  extras: Iterator[Tensor] | None, mask_threshold: float, keep_levels: bool = False
                  ) -> Iterator[FrameDetections]:
    images = [_to_tensor(f) for f in frames]
    preds = detector(images)
    for k, (image, pred) in enumerate(zip(images, preds)):
        labels = torch.tensor([label_to_category_id[int(v)] for v in pred["labels"]], dtype=torch.int64)
        masks = pred["masks"][:, 0] >= mask_threshold if "masks" in pred else torch.zeros(
            (len(labels), *image.shape[-2:]), dtype=torch.bool)
        out = FrameDetections(pred["boxes"], pred["scores"], labels, masks)
        if catcher is not None and pooler is not None:
            boxes = pred["boxes"] if extras is None else torch.cat([pred["boxes"], next(extras).float()])
            original, size = tuple(image.shape[-2:]), catcher.sizes[k]
            if size != original:
                boxes = resize_boxes(boxes, list(original), list(size))
            levels = {name: catcher.features[name][k:k + 1] for name in pooler.featmap_names}
            out.roi_features = pooler(levels, [boxes], [size])
        if keep_levels and catcher is not None:
            out.levels = {name: f[k] for name, f in catcher.features.items() if name != "pool"}
            out.feature_size = catcher.sizes[k]
        yield out


def track_frames(detections: Iterable[FrameDetections], tracker: Any, embed_head: nn.Module | None = None
                 ) -> Iterator[tuple[FrameDetections, Tensor]]:
    """Each frame's detections with the track id the tracker gives each (-1: not output).
    ``tracker.reset()`` starts the video; an ``embed_head`` turns ROI features into embeddings."""
    tracker.reset()
    if embed_head is not None:
        embed_head.eval()
    for frame in detections:
        inputs = frame.as_dict()
        if embed_head is not None:
            if frame.roi_features is None:
                raise ValueError("an embedding tracker needs ROI features: detect with with_features=True")
            with torch.no_grad():
                inputs["embeddings"] = embed_head(frame.roi_features[:len(frame)].float())
        yield frame, tracker.update(inputs)
