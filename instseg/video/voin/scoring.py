"""One VOI sample's inpainting scored the way Table 5.8 reads, the same for every method (learned or not).

Frames that have a hole only (a frame without one is the input itself, and would score PSNR +inf):
``psnr`` / ``ssim`` on the composited frame (E2FGVI's protocol, :mod:`instseg.evaluation.inpainting`),
``lpips`` (AlexNet, frames whole), ``psnr_hole`` on the occluded pixels alone (the part a method
actually fills; the whole-frame number is dominated by the untouched background), ``ssim_object``
(the SSIM map's mean over the amodal object). ``ewarp``: the warping error of the result over the
object (amodal mask of frame t) along the clean scene's exact forward flow — our E_warp needs no
flow network, and ``ewarp_gt`` is the clean frames' own (noise and illumination drift are not zero).
The score is always against ``sample.clean``, so it stays right when the masks given to the method
are not the sample's own (the robustness study, tracker masks).
"""

from __future__ import annotations

import numpy as np

from instseg.errors import InputError
from instseg.evaluation.inpainting import SSIM_WIN_SIZE, psnr_frames, region_psnr, region_ssim, ssim_frames, \
    warping_error
from instseg.evaluation.lpips import LPIPS, lpips_frames
from instseg.video.voin.data import VoiSample
from instseg.video.voin.inpaint_data import sample_name

METRICS: tuple[str, ...] = ("psnr", "ssim", "lpips", "psnr_hole", "ssim_object", "ewarp")
LOWER_IS_BETTER = frozenset({"lpips", "ewarp", "epe"})


def object_warping_error(frames: np.ndarray, forward: np.ndarray, amodal: np.ndarray) -> float:
    """E_warp over the object's pixels of each source frame (pairs where it is absent are skipped)."""
    keep = [t for t in range(len(frames) - 1) if amodal[t].any()]
    if not keep:
        return float("nan")
    return float(np.mean([warping_error(frames[t:t + 2], forward[t:t + 1], amodal[t:t + 1]) for t in keep]))


def score_inpainting(pred: np.ndarray, sample: VoiSample, exact_forward: np.ndarray, lpips: LPIPS,
                     hole: np.ndarray | None = None, win_size: int = SSIM_WIN_SIZE) -> dict[str, float]:
    """``pred`` (L, H, W, 3) uint8 against the sample's clean frames (module docstring). ``hole``: where
    the method was allowed to paint (default the sample's occluded masks); frames with no hole and no
    true hole are left out."""
    hole = sample.occluded if hole is None else hole
    if pred.shape != sample.clean.shape:
        raise InputError(f"prediction {pred.shape} vs clean frames {sample.clean.shape}", record=sample_name(sample))
    painted = hole | sample.occluded
    frames = painted.any(axis=(1, 2))
    if not frames.any():
        raise InputError("the sample has no hole in any frame: nothing to score", record=sample_name(sample))
    clean, out = sample.clean[frames], pred[frames]
    return {"psnr": float(psnr_frames(out, clean, painted[frames]).mean()),
            "ssim": float(ssim_frames(out, clean, painted[frames], win_size).mean()),
            "lpips": float(lpips_frames(out, clean, lpips).mean()),
            "psnr_hole": region_psnr(pred, sample.clean, sample.occluded),
            "ssim_object": region_ssim(pred, sample.clean, sample.amodal, painted, win_size),
            "ewarp": object_warping_error(pred, exact_forward, sample.amodal)}


def clean_warping_error(sample: VoiSample, exact_forward: np.ndarray) -> float:
    """The clean frames' own object E_warp: the floor of ``ewarp`` on this benchmark."""
    return object_warping_error(sample.clean, exact_forward, sample.amodal)


