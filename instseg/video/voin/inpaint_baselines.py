"""Trivial inpainting baselines: the floor a trained generator must clear on the hole.

``zero_fill``: the hole black (what the generator sees of it before filling); ``telea``: OpenCV's
Telea fast-marching image inpainting, frame by frame (radius 3 px), from every known pixel around
the hole, background included. Both keep every pixel outside the hole.
"""

from __future__ import annotations

import cv2
import numpy as np

from instseg.video.voin.data.samples import VoiSample

TELEA_RADIUS = 3


def zero_fill(sample: VoiSample) -> np.ndarray:
    out = sample.corrupted.copy()
    out[sample.occluded] = 0
    return out


def telea(sample: VoiSample) -> np.ndarray:
    return np.stack([cv2.inpaint(f, m.astype(np.uint8), TELEA_RADIUS, cv2.INPAINT_TELEA) if m.any() else f.copy()
                     for f, m in zip(sample.corrupted, sample.occluded)])


BASELINES = {"zero_fill": zero_fill, "telea": telea}
