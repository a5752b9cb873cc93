"""Exact optical flow of OccludedShapes-VIS, from the known motions rather than estimated.

At a pixel covered by objects, the flow is the motion of the front-most one (its amodal outline
decides, so a pixel of a hidden part never counts): the similarity T_{t'} o T_t^-1 of its poses.
Elsewhere it is the background's, which only the camera moves: whole pixels per frame, so the
flow there is an exact integer. Too large to store for every frame of a split (128x128x2 float32
is 128 KiB a frame and direction), so this function is the source of truth.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from instseg.errors import InputError
from instseg.video.data.occluded_shapes_vis.motion import pose_map
from instseg.video.data.occluded_shapes_vis.render import amodal_mask, check_frame, paint_order

DIRECTIONS = {"forward": 1, "backward": -1}


def flow(scene: dict[str, Any], t: int, direction: str = "forward") -> np.ndarray:
    """(dx, dy) of every pixel of frame ``t`` to frame t+1 ("forward") or t-1 ("backward"), float32 HxWx2."""
    if direction not in DIRECTIONS:
        raise InputError(f"direction must be one of {sorted(DIRECTIONS)}, got {direction!r}", record=f"frame {t}")
    check_frame(scene, t)
    target = t + DIRECTIONS[direction]
    if not 0 <= target < scene["length"]:
        raise InputError(f"frame {t} has no {direction} neighbour in a {scene['length']}-frame video",
                         record=f"frame {t}")
    (ox0, oy0), (ox1, oy1) = scene["camera"][t], scene["camera"][target]
    out = np.empty((scene["height"], scene["width"], 2), dtype=np.float32)
    out[..., 0], out[..., 1] = ox0 - ox1, oy0 - oy1
    for obj in paint_order(scene, t):  # back to front: the front-most object writes last
        mask = amodal_mask(scene, obj, t)
        if not mask.any():
            continue
        ys, xs = np.nonzero(mask)
        A, b = pose_map(obj["frames"][t], obj["frames"][target])
        out[ys, xs, 0] = A[0, 0] * xs + A[0, 1] * ys + b[0] - xs
        out[ys, xs, 1] = A[1, 0] * xs + A[1, 1] * ys + b[1] - ys
    return out
