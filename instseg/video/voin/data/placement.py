"""Placing a synthetic occluder so that it really covers part of the target in every clip frame."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from instseg.video.voin.data.config import VoiConfig
from instseg.video.voin.data.occluders import Occluder, occluder_poses


class PlacementError(ValueError):
    """No drawn occluder path kept the target's occluded fraction within the bounds in every frame."""


def coverage(occluder: np.ndarray, amodal: np.ndarray) -> np.ndarray:
    """Per frame, the share of the target's amodal pixels under the occluder ((L,) float; NaN where
    the target has no pixel in the frame)."""
    area = amodal.sum(axis=(1, 2)).astype(np.float64)
    hit = (occluder & amodal).sum(axis=(1, 2)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(area > 0, hit / np.maximum(area, 1), np.nan)


def place_occluder(rng: np.random.Generator, cfg: VoiConfig, template: Occluder, amodal: np.ndarray,
                   centres: np.ndarray, target_radius: float, record: str = "target") -> tuple[Occluder, np.ndarray]:
    """The occluder (``template`` with drawn poses) and its masks (L, H, W) over a clip whose target has
    masks ``amodal`` and centres ``centres``; raises :class:`PlacementError` naming ``record`` when
    ``placement_tries`` draws all leave some frame outside ``[min_occluded, max_occluded]``."""
    n, height, width = amodal.shape
    present = amodal.any(axis=(1, 2))
    if not present.any():
        raise PlacementError(f"{record}: the target has no pixel in any clip frame")
    best = (np.inf, None)
    for attempt in range(1, cfg.placement_tries + 1):
        radius = target_radius * float(rng.uniform(*cfg.occluder_scale))
        direction = float(rng.uniform(0, 2 * np.pi))
        distance = float(rng.uniform(0.0, 1.0)) * (target_radius + radius)
        anchor = centres[n // 2] + distance * np.array([np.cos(direction), np.sin(direction)])
        occ = replace(template, poses=occluder_poses(rng, cfg, centres, anchor, radius), tries=attempt)
        masks = np.stack([occ.mask(t, height, width) for t in range(n)])
        frac = coverage(masks, amodal)[present]
        miss = float(np.maximum(cfg.min_occluded - frac, 0).sum() + np.maximum(frac - cfg.max_occluded, 0).sum())
        if miss == 0.0:
            return occ, masks
        if miss < best[0]:
            best = (miss, (float(frac.min()), float(frac.max())))
    raise PlacementError(
        f"{record}: no placement of a {template.kind} occluder kept the occluded fraction within "
        f"[{cfg.min_occluded}, {cfg.max_occluded}] in all {int(present.sum())} frames after {cfg.placement_tries} "
        f"tries (closest: fractions {best[1][0]:.2f}..{best[1][1]:.2f})")
