"""Does the hole give itself away? A trivial detector of pasted occluders, and the noise check it implies.

A model can shortcut inpainting if the corrupted region is recognisable by low-level statistics
alone, e.g. a noiseless flat patch in noisy frames. The check: the high-pass residual of a frame
(frame minus its 3x3 median, which keeps the benchmark's piecewise-flat texture edges, so what
remains is mostly sensor noise) must have the same level (RMS of the residuals below a clip) inside the occluder
(eroded, so no edge pixel counts) as in a ring around it; and a flatness detector (low local
residual energy = hole) must separate occluder from ring pixels no better than it separates the
same pixels in the clean frames, where nothing was pasted (its AUC there is the content-only
baseline; 0.5 is chance).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import cv2
import numpy as np
from scipy.stats import rankdata

from instseg.video.voin.data.samples import VoiSample


@dataclass(frozen=True)
class NoiseMatch:
    """Residual noise inside the occluder vs the ring around it, and the flatness detector's AUC."""

    inside_std: float
    outside_std: float
    ratio: float  # inside / outside; 1 = same noise level
    auc: float  # flatness detector, occluder vs ring pixels; 0.5 = chance
    inside_pixels: int
    outside_pixels: int


def highpass(frame: np.ndarray) -> np.ndarray:
    """Frame minus its 3x3 median (HxWx3 float32, uint8 levels)."""
    return frame.astype(np.float32) - cv2.medianBlur(np.ascontiguousarray(frame), 3).astype(np.float32)


def clipped_std(values: np.ndarray, clip: float) -> float:
    """RMS of the residuals within ``clip`` of zero: the noise level, ignoring the texture edges left
    (large residuals). A truncated moment rather than a MAD, because residuals of uint8 frames are
    integers and their median absolute value jumps in whole steps."""
    kept = values[np.abs(values) <= clip]
    return float(np.sqrt(np.mean(kept.astype(np.float64) ** 2))) if kept.size else float("nan")


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def regions(mask: np.ndarray, margin: int = 2, ring: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(inside, around) of one frame's occluder mask: eroded by ``margin``; dilated by ``ring`` minus
    dilated by ``margin`` (so neither holds a pixel whose 3x3 or 5x5 window crosses the outline)."""
    m = mask.astype(np.uint8)
    inside = cv2.erode(m, _disk(margin)).astype(bool)
    around = cv2.dilate(m, _disk(ring)).astype(bool) & ~cv2.dilate(m, _disk(margin)).astype(bool)
    return inside, around


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Mann-Whitney AUC: P(score of a positive > score of a negative), ties counted half."""
    if positive.size == 0 or negative.size == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([positive, negative]))
    return float((ranks[:positive.size].sum() - positive.size * (positive.size + 1) / 2) /
                 (positive.size * negative.size))


def noise_match(frames: np.ndarray, masks: np.ndarray, margin: int = 2, ring: int = 8) -> NoiseMatch:
    """Pooled over the frames (L, H, W, 3) uint8 and region masks (L, H, W) bool. Both sides share
    one clip, 2 x the pooled MAD estimate of the noise std (at least 2 levels): on the validation
    split a clip of 3 let texture residuals into the ring's estimate (ratios 0.70..1.11 for pasted
    occluders), 2 keeps them out (0.92..1.07)."""
    ins, outs, s_in, s_out = [], [], [], []
    for frame, mask in zip(frames, masks):
        if not mask.any():
            continue
        inside, around = regions(mask, margin, ring)
        r = highpass(frame)
        energy = cv2.blur((r ** 2).mean(axis=2), (5, 5))  # local residual energy, 5x5
        ins.append(r[inside].ravel())
        outs.append(r[around].ravel())
        s_in.append(-energy[inside])  # flatter = more hole-like
        s_out.append(-energy[around])
    cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.float32))
    inside, outside = cat(ins), cat(outs)
    both = np.concatenate([inside, outside])
    clip = max(2.0 * 1.4826 * float(np.median(np.abs(both))) if both.size else 0.0, 2.0)
    a, b = clipped_std(inside, clip), clipped_std(outside, clip)
    return NoiseMatch(a, b, a / b if b > 0 else float("nan"), auc(cat(s_in), cat(s_out)),
                      int(inside.size), int(outside.size))


def leak_diagnostic(sample: VoiSample) -> dict[str, NoiseMatch]:
    """The check on a sample's corrupted frames and, as the content-only baseline, on its clean
    frames over the same regions: ``{"corrupted": ..., "clean": ...}``."""
    return {"corrupted": noise_match(sample.corrupted, sample.occluder),
            "clean": noise_match(sample.clean, sample.occluder)}


def split_leak_report(samples: Iterable[tuple[dict[str, Any], VoiSample]], tolerance: float = 0.2) -> dict[str, Any]:
    """Over a split's (entry, sample) pairs: per kind, the share of samples whose inside/outside
    noise ratio is within ``tolerance`` of 1, the mean ratio and the flatness detector's mean AUC on
    corrupted and on clean frames (and percentiles: a pasted occluder's spread should lie within
    that of real objects, the natural samples' occluders); and ``synthetic_vs_natural_auc``, how well the ratio tells a
    pasted occluder from a real scene object (0.5: not at all)."""
    rows: dict[str, list[tuple[float, float, float]]] = {"synthetic": [], "natural": []}
    for entry, sample in samples:
        d = leak_diagnostic(sample)
        rows[entry["kind"]].append((d["corrupted"].ratio, d["corrupted"].auc, d["clean"].auc))
    out: dict[str, Any] = {}
    for kind, values in rows.items():
        a = np.array(values, dtype=np.float64).reshape(-1, 3)
        if not len(a):
            out[kind] = {"samples": 0}
            continue
        out[kind] = {"samples": len(a), "within_tolerance": float(np.mean(np.abs(a[:, 0] - 1) <= tolerance)),
                     "mean_ratio": float(np.nanmean(a[:, 0])),
                     "ratio_p5_p50_p95": np.round(np.nanpercentile(a[:, 0], [5, 50, 95]), 4).tolist(),
                     "mean_auc_corrupted": float(np.nanmean(a[:, 1])), "mean_auc_clean": float(np.nanmean(a[:, 2])),
                     "auc_p5_p50_p95": np.round(np.nanpercentile(a[:, 1], [5, 50, 95]), 4).tolist()}
    syn = np.array([r[0] for r in rows["synthetic"]])
    nat = np.array([r[0] for r in rows["natural"]])
    out["synthetic_vs_natural_auc"] = auc(np.abs(syn - 1), np.abs(nat - 1))
    out["tolerance"] = tolerance
    return out
