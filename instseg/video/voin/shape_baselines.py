"""Shape-completion baselines with the model's inputs (a clip's visible masks): what the
transformer has to beat. ``visible_baseline`` predicts no completion at all (amodal = visible: its
invisible IoU is 0 wherever something is hidden); ``convex_hull_baseline`` fills each frame's
visible mask to its convex hull, which completes convex shapes cut by a straight-ish occluder and
overshoots on notched or annular ones."""

from __future__ import annotations

import numpy as np
from skimage.morphology import convex_hull_image

from instseg.errors import InputError


def _clip(visible: np.ndarray, record: str) -> np.ndarray:
    visible = np.asarray(visible)
    if visible.ndim != 3:
        raise InputError(f"visible masks must be (T, H, W), got shape {visible.shape}", record=record)
    return visible.astype(bool)


def visible_baseline(visible: np.ndarray, record: str = "visible baseline") -> np.ndarray:
    """The visible masks as the amodal prediction (T, H, W) bool."""
    return _clip(visible, record).copy()


def convex_hull_baseline(visible: np.ndarray, record: str = "convex-hull baseline") -> np.ndarray:
    """Per frame, the convex hull of the visible mask (all its pieces together); an empty frame
    stays empty. Pixels whose centres lie inside the hull count (scikit-image's rule), so the hull
    contains the mask."""
    visible = _clip(visible, record)
    out = np.zeros_like(visible)
    for t, frame in enumerate(visible):
        if frame.any():
            out[t] = convex_hull_image(frame) | frame
    return out


BASELINES = {"visible": visible_baseline, "convex_hull": convex_hull_baseline}
