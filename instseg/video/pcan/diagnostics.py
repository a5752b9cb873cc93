"""How far a trained PCAN's modules move what the tables read, on cached videos: when every
ablation row ties, this says whether the modules learnt nothing or what they learnt never reaches
a mask or a link.

- ``frame_change``: the frame module's relative change of the maps at its levels, mean over frames
  (|enhanced - raw| / |raw|; 0 at initialisation, where the fusion is zero);
- ``refine_flips``: the fraction of the detections' 28x28 mask pixels whose sign the refine head
  flips against the detector's coarse logits (the refined mask is a residual over them);
- ``maps_flips``: the fraction that flips again when the fg/bg attention maps are zeroed: what the
  instance prototypes decide, and so the most that eq. 5.8's momentum or the prototype numbers can
  change.

Each frame reads the memory of the frames before it and fits its own prototypes (no propagation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from instseg.video.pcan.cache import CachedVideo
from instseg.video.pcan.model import PCAN


@torch.no_grad()
def module_effects(model: PCAN, videos: Sequence[CachedVideo]) -> dict[str, float]:
    """``frame_change``, ``refine_flips`` and ``maps_flips`` (see the module docstring) of ``model`` on ``videos``."""
    model.eval()
    changes: list[float] = []
    refine_flips = maps_flips = pixels = 0
    for video in videos:
        for frame, levels, enhanced in model.stream(video.frames):
            changes += [float((enhanced[k] - levels[k]).norm() / levels[k].norm().clamp(min=1e-12))
                        for k in model.frame]
            boxes = frame.detections.boxes
            if not len(boxes):
                continue
            coarse = frame.detection_logits.float()
            rois = model.pool(enhanced, [boxes.float()], frame.feature_size, video.size)
            maps = model.maps(rois, model.prototypes(rois, coarse))
            refined = model.refine(rois, maps, coarse)["mask"][:, 0] > 0
            without = model.refine(rois, torch.zeros_like(maps), coarse)["mask"][:, 0] > 0
            refine_flips += int((refined != (coarse > 0)).sum())
            maps_flips += int((refined != without).sum())
            pixels += refined.numel()
    return {"frame_change": sum(changes) / max(len(changes), 1),
            "refine_flips": refine_flips / max(pixels, 1), "maps_flips": maps_flips / max(pixels, 1)}
