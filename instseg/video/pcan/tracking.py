"""PCAN at test time on cached frames: each frame enhanced by the memory of the frames before it,
QDTrack's tracker linking the same detections every tracker sees by PCAN's embeddings, and every
output detection's mask refined from its tracklet's prototypes, propagated by eq. 5.8.

The variants of Table 5.7 are ``momentum`` values: 1 uses the current frame's prototypes only
(no propagation), 0 keeps the tracklet's first prototypes, in between eq. 5.8. The released
code's untrained frame-level shortcut is ``banks``: a :class:`RunningPrototypeBank` per FPN level,
applied to the maps before the model sees them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torchvision.models.detection.roi_heads import paste_masks_in_image

from instseg.video.data.track_results import TrackedVideo
from instseg.video.layers.frame_attention import RunningPrototypeBank
from instseg.video.layers.instance_attention import propagate
from instseg.video.models.trackers.quasi_dense import QuasiDenseConfig, QuasiDenseTracker
from instseg.video.pcan.cache import CachedFrame, CachedVideo
from instseg.video.pcan.model import PCAN

Prototypes = tuple[Tensor, Tensor]


class TrackletPrototypes:
    """Each tracklet's propagated foreground/background prototypes within one video."""

    def __init__(self, model: PCAN, momentum: float) -> None:
        self.model, self.momentum = model, momentum
        self.state: dict[int, Prototypes] = {}

    def update(self, ids: Sequence[int], rois: Tensor, logits: Tensor) -> Prototypes:
        """The prototypes each ROI (of track ``ids[i]``) is refined with, after this frame's update."""
        seen = [i for i, k in enumerate(ids) if k in self.state]
        new = [i for i, k in enumerate(ids) if k not in self.state]
        out: dict[int, Prototypes] = {}
        if seen:
            previous = tuple(torch.stack([self.state[ids[i]][j] for i in seen]) for j in range(2))
            current = self.model.prototypes(rois[seen], logits[seen], init=previous)
            merged = tuple(propagate(p, c, self.momentum) for p, c in zip(previous, current))
            out |= {i: (merged[0][n], merged[1][n]) for n, i in enumerate(seen)}
        if new:
            fitted = self.model.prototypes(rois[new], logits[new])
            out |= {i: (fitted[0][n], fitted[1][n]) for n, i in enumerate(new)}
        for i, k in enumerate(ids):
            self.state[k] = out[i]
        return tuple(torch.stack([out[i][j] for i in range(len(ids))]) for j in range(2))


def _refined_masks(model: PCAN, frame: CachedFrame, rois: Tensor, ids: Tensor, tracklets: TrackletPrototypes,
                   size: tuple[int, int]) -> Tensor:
    """The frame's masks with every output detection's mask refined (the others as detected)."""
    masks = frame.detections.masks.clone()
    out = torch.nonzero(ids > 0).flatten()
    if len(out):
        logits = frame.detection_logits[out].float()
        prototypes = tracklets.update(ids[out].tolist(), rois[out], logits)
        refined = model.refine(rois[out], model.maps(rois[out], prototypes), logits)["mask"]
        masks[out] = paste_masks_in_image(refined.sigmoid(), frame.detections.boxes[out], size)[:, 0] >= 0.5
    return masks


@torch.no_grad()
def track_pcan(model: PCAN, videos: Sequence[CachedVideo], tracker: QuasiDenseConfig | None = None,
               momentum: float | None = None, banks: Mapping[str, RunningPrototypeBank] | None = None
               ) -> dict[int, TrackedVideo]:
    """Each video's tracks (video id -> TrackedVideo); ``momentum`` defaults to the model's."""
    model.eval()
    momentum = model.config.momentum if momentum is None else momentum
    span = model.config.memory_length - 1
    out = {}
    for video in videos:
        linker = QuasiDenseTracker(tracker or QuasiDenseConfig())
        tracklets = TrackletPrototypes(model, momentum)
        for bank in (banks or {}).values():
            bank.reset()
        memory: list = []
        tracked = TrackedVideo()
        for frame in video.frames:
            levels = {k: v[None].float() for k, v in frame.levels.items()}
            for name, bank in (banks or {}).items():
                levels[name] = bank(levels[name])
            enhanced = model.enhance(levels, memory)
            if span:
                memory = (memory + [model.memory_entry(levels)])[-span:]
            det = frame.detections
            rois = model.pool(enhanced, [det.boxes], frame.feature_size, video.size)
            ids = linker.update({**det.as_dict(), "embeddings": model.embed(rois)})
            tracked.add({**det.as_dict(), "masks": _refined_masks(model, frame, rois, ids, tracklets, video.size)}, ids)
        out[video.video_id] = tracked
    return out
