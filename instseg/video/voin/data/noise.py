"""The benchmark's sensor noise, reproduced so pasted pixels carry the very noise of the frame under them.

OccludedShapes-VIS adds i.i.d. Gaussian noise (``scene["noise"]["std"]``, in [0, 1] units, per pixel
and channel) drawn from a per-frame stream seeded by ``(scene["noise"]["seed"], t)``, then rounds
to uint8 (``render.render_frame``). A pasted occluder painted with the same stream is
indistinguishable from a scene object by its noise: same std, same quantisation, same clipping.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def sensor_noise(scene: dict[str, Any], t: int) -> np.ndarray:
    """The noise ``render_frame`` adds to frame ``t`` (HxWx3 float32), drawn the same way."""
    shape = (scene["height"], scene["width"], 3)
    noise = np.random.default_rng([scene["noise"]["seed"], t]).normal(0.0, scene["noise"]["std"], size=shape)
    return noise.astype(np.float32)


def quantise(colours: np.ndarray) -> np.ndarray:
    """Float colours in [0, 1] (noise included) to uint8, as the generator rounds them."""
    return np.clip(np.round(colours * 255.0), 0, 255).astype(np.uint8)


def paint(frame: np.ndarray, mask: np.ndarray, colours: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """``frame`` (uint8 HxWx3) with the pixels ``mask`` replaced by noise-free ``colours`` (N x 3 float
    in [0, 1]) plus the frame's own ``noise``: what the renderer would have produced there."""
    out = frame.copy()
    out[mask] = quantise(colours.astype(np.float32) + noise[mask])
    return out
