"""PCAN at test time on cached frames: each frame enhanced by the memory of the frames before it,
QDTrack's tracker linking the same detections every tracker sees by PCAN's embeddings, and every
output detection's mask refined from its tracklet's prototypes, propagated by eq. 5.8.

The variants of Table 5.7 are ``momentum`` values: 1 uses the current frame's prototypes only
(no propagation), 0 keeps the tracklet's first prototypes, in between eq. 5.8. The released
code's untrained frame-level shortcut is ``banks``: a :class:`RunningPrototypeBank` per FPN level,
applied to the maps before the model sees them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

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
        self.maps: dict[int, Tensor] = {}  # the last frame's fg/bg attention maps [2, 14, 14] per output track

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
    tracklets.maps = {}
    if len(out):
        logits = frame.detection_logits[out].float()
        prototypes = tracklets.update(ids[out].tolist(), rois[out], logits)
        maps = model.maps(rois[out], prototypes)
        tracklets.maps = {int(k): m for k, m in zip(ids[out].tolist(), maps)}
        refined = model.refine(rois[out], maps, logits)["mask"]
        masks[out] = paste_masks_in_image(refined.sigmoid(), frame.detections.boxes[out], size)[:, 0] >= 0.5
    return masks


@torch.no_grad()
def track_pcan(model: PCAN, videos: Sequence[CachedVideo], tracker: QuasiDenseConfig | None = None,
               momentum: float | None = None, banks: Mapping[str, RunningPrototypeBank] | None = None
               ) -> dict[int, TrackedVideo]:
    """Each video's tracks (video id -> TrackedVideo); ``momentum`` defaults to the model's."""
    variant = (model, model.config.momentum if momentum is None else momentum)
    return track_pcan_variants(model, videos, {"": variant}, tracker, banks)[""]


@torch.no_grad()
def track_pcan_variants(model: PCAN, videos: Sequence[CachedVideo], variants: Mapping[str, tuple[PCAN, float]],
                        tracker: QuasiDenseConfig | None = None,
                        banks: Mapping[str, RunningPrototypeBank] | None = None) -> dict[str, dict[int, TrackedVideo]]:
    """One linking pass of ``model`` (frame module, embeddings, tracker) and, per variant name, the
    tracks with masks refined by that variant's instance level (a model sharing ``model``'s frame
    module: its prototypes and refine head, at its momentum). Variants differ in masks only, so
    their identities are the same: what Tables 5.6 and 5.7 compare is the instance level alone."""
    out: dict[str, dict[int, TrackedVideo]] = {name: {} for name in variants}
    for video in videos:
        tracked = {name: TrackedVideo() for name in variants}
        for frame, ids, masks in track_frames_pcan(model, video.frames, video.size, variants, tracker, banks):
            for name, m in masks.items():
                tracked[name].add({**frame.detections.as_dict(), "masks": m}, ids)
        for name in variants:
            out[name][video.video_id] = tracked[name]
    return out


@torch.no_grad()
def track_frames_pcan(model: PCAN, frames: Iterable[CachedFrame], size: tuple[int, int],
                      variants: Mapping[str, tuple[PCAN, float]], tracker: QuasiDenseConfig | None = None,
                      banks: Mapping[str, RunningPrototypeBank] | None = None,
                      tracklets_out: dict[str, TrackletPrototypes] | None = None
                      ) -> Iterator[tuple[CachedFrame, Tensor, dict[str, Tensor]]]:
    """One video, frame by frame (a stream: only the memory is kept): each frame with its track
    ids (-1: not output) and, per variant, its masks [N, H, W]. ``tracklets_out`` receives each
    variant's tracklet state (its ``maps`` are those of the frame just yielded: the widget's)."""
    model.eval()
    for refiner, _ in variants.values():
        refiner.eval()
    linker = QuasiDenseTracker(tracker or QuasiDenseConfig())
    tracklets = {name: TrackletPrototypes(refiner, m) for name, (refiner, m) in variants.items()}
    if tracklets_out is not None:
        tracklets_out.update(tracklets)
    for frame, levels, enhanced in model.stream(frames, banks):
        det = frame.detections
        rois = model.pool(enhanced, [det.boxes], frame.feature_size, size)
        ids = linker.update({**det.as_dict(), "embeddings": model.embed(levels, rois, [det.boxes], frame.feature_size,
                                                                        size)})
        yield frame, ids, {name: _refined_masks(refiner, frame, rois, ids, tracklets[name], size)
                           for name, (refiner, _) in variants.items()}
