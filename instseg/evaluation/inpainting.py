"""Video-inpainting metrics as E2FGVI, ProPainter and FuseFormer report them, plus the region, flow
and temporal-consistency numbers VOIN needs.

Frames are ``[T, H, W, 3]`` arrays (a single ``[H, W, 3]`` frame is a one-frame video), uint8 or
float on the 0-255 scale; masks are ``[T, H, W]`` (or ``[H, W]``), boolean or 0/1. Arithmetic is
float64 throughout, so uint8 input cannot wrap around and float32 input gives the same numbers.

* Whole-frame PSNR and SSIM follow the published evaluations: each frame is scored on its
  composited version (prediction inside the hole, ground truth outside: :func:`composite`), and a
  video's number is the mean over all of its frames. PSNR = 20·log10(255/√MSE). SSIM is
  scikit-image's, ``data_range=255``, channels averaged, window 65 (the published window; the
  default 7 gives visibly lower numbers, 0.9876 against 0.9965 on one image), so the window used
  is returned with every SSIM (:func:`inpainting_metrics`). Frames smaller than the window raise
  :class:`InputError`: a silently shrunk window would give numbers that compare to nothing.
* A frame equal to its ground truth has MSE 0 and PSNR +inf, and a mean over frames containing
  one is +inf too: nothing is capped. E2FGVI's code divides by zero there, and a cap (say 100 dB)
  would be an arbitrary number inside every mean. Frames that are not part of an evaluation (e.g.
  without a hole) are the caller's to drop; :func:`psnr_frames` gives the per-frame values.
* Region variants score an object region only (a boolean mask per frame): PSNR from the MSE over
  the region's pixels, SSIM as the mean of scikit-image's SSIM map over the region. Frames where
  the region is empty are skipped. scikit-image's scalar SSIM leaves out a border of
  ``(win_size - 1) // 2`` pixels, the region mean does not, so the region variant over the whole
  frame is not the whole-frame SSIM (over the frame minus that border it is).
* EPE is the mean end-point error ‖f_pred − f_gt‖₂ over pixels, optionally inside a mask.
* The warping error is fast_blind_video_consistency's E_warp with a given exact flow:
  ``flows[t]`` is the forward flow from frame t to frame t+1 in pixels, ``(dx, dy)``, so pixel
  ``(x, y)`` of frame t shows up at ``(x + dx, y + dy)`` in frame t+1. Frame t+1 is sampled back
  at those points (bilinear, ``torch.nn.functional.grid_sample`` in float64) and compared with
  frame t: mean squared error over valid pixels and the three channels, frames scaled to [0, 1]
  as in that code, then the mean over frame pairs. A point whose sample falls outside frame t+1
  is never valid (there is nothing to compare it with).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from instseg.errors import InputError

SSIM_WIN_SIZE = 65  # E2FGVI / ProPainter / FuseFormer


def as_frames(frames: np.ndarray, name: str) -> np.ndarray:
    """``frames`` as ``[T, H, W, 3]`` float64 on the 0-255 scale, or InputError naming ``name`` and the problem."""
    array = np.asarray(frames)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise InputError(f"{name} must be [T, H, W, 3] or [H, W, 3] RGB frames, got shape {np.shape(frames)}")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputError(f"{name} must be uint8 or float frames, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise InputError(f"{name} contains NaN or infinite values")
    if array.min() < 0 or array.max() > 255:
        raise InputError(f"{name} has values in [{array.min():g}, {array.max():g}]; frames must be on the "
                         "0-255 scale")
    return array


def _as_masks(mask: np.ndarray, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean ``[T, H, W]`` masks matching video ``shape`` ([T, H, W, 3]), or InputError."""
    array = np.asarray(mask)
    if array.ndim == 2:
        array = array[None]
    if array.shape != tuple(shape[:3]):
        raise InputError(f"{name} has shape {np.shape(mask)}, expected {tuple(shape[:3])} (one boolean mask per "
                         "frame; [H, W] for a single frame)")
    if array.dtype != bool:
        if not np.isin(array, (0, 1)).all():
            raise InputError(f"{name} must be boolean or 0/1, got other values (dtype {array.dtype})")
        array = array.astype(bool)
    return array


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred_v, gt_v = as_frames(pred, "pred"), as_frames(gt, "gt")
    if pred_v.shape != gt_v.shape:
        raise InputError(f"pred has shape {np.shape(pred)} and gt {np.shape(gt)}; they must match")
    return pred_v, gt_v


def composite(pred: np.ndarray, gt: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Prediction inside the hole, ground truth outside: what the published metrics score, so a
    method is not credited or blamed for pixels it was given. Same shape as ``gt``, float64."""
    pred_v, gt_v = _pair(pred, gt)
    hole_v = _as_masks(hole, "hole", gt_v.shape)
    return np.where(hole_v[..., None], pred_v, gt_v).reshape(np.shape(gt))


def _scored(pred: np.ndarray, gt: np.ndarray, hole: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 videos, the prediction composited when a hole is given."""
    pred_v, gt_v = _pair(pred, gt)
    if hole is not None:
        pred_v = np.where(_as_masks(hole, "hole", gt_v.shape)[..., None], pred_v, gt_v)
    return pred_v, gt_v


def _psnr_from_mse(mse: np.ndarray) -> np.ndarray:
    """20·log10(255/√MSE); MSE 0 gives +inf without a division warning."""
    with np.errstate(divide="ignore"):
        return 20.0 * np.log10(255.0 / np.sqrt(mse))


def psnr_frames(pred: np.ndarray, gt: np.ndarray, hole: np.ndarray | None = None) -> np.ndarray:
    """Per-frame PSNR in dB (+inf for a frame equal to its ground truth), composited when ``hole`` is given."""
    pred_v, gt_v = _scored(pred, gt, hole)
    return _psnr_from_mse(((pred_v - gt_v) ** 2).mean(axis=(1, 2, 3)))


def psnr(pred: np.ndarray, gt: np.ndarray, hole: np.ndarray | None = None) -> float:
    """A video's PSNR: the mean of its per-frame PSNRs (+inf if any frame is exact)."""
    return float(psnr_frames(pred, gt, hole).mean())


def _check_window(shape: tuple[int, ...], win_size: int) -> None:
    if isinstance(win_size, bool) or not isinstance(win_size, (int, np.integer)) or win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"win_size must be an odd integer >= 3, got {win_size!r}")
    height, width = shape[1:3]
    if min(height, width) < win_size:
        raise InputError(f"frames are {height}x{width}, smaller than the SSIM window {win_size}; pass a smaller "
                         "odd win_size explicitly (the published protocol uses 65 on 432x240 frames)")


def _ssim_map(pred: np.ndarray, gt: np.ndarray, win_size: int) -> tuple[float, np.ndarray]:
    """scikit-image's SSIM of one float64 frame pair and its per-pixel, per-channel map."""
    value, ssim_map = structural_similarity(pred, gt, data_range=255, channel_axis=-1, win_size=win_size,
                                            full=True)
    return float(value), ssim_map


def ssim_frames(pred: np.ndarray, gt: np.ndarray, hole: np.ndarray | None = None,
                win_size: int = SSIM_WIN_SIZE) -> np.ndarray:
    """Per-frame SSIM (scikit-image, data_range 255, channels averaged), composited when ``hole`` is given."""
    pred_v, gt_v = _scored(pred, gt, hole)
    _check_window(gt_v.shape, win_size)
    return np.array([_ssim_map(p, g, win_size)[0] for p, g in zip(pred_v, gt_v, strict=True)])


def ssim(pred: np.ndarray, gt: np.ndarray, hole: np.ndarray | None = None, win_size: int = SSIM_WIN_SIZE) -> float:
    """A video's SSIM: the mean of its per-frame SSIMs."""
    return float(ssim_frames(pred, gt, hole, win_size).mean())


def _nonempty_region(region: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    region_v = _as_masks(region, "region", shape)
    if not region_v.any():
        raise InputError("region is empty in every frame; a region metric needs at least one pixel")
    return region_v


def region_psnr(pred: np.ndarray, gt: np.ndarray, region: np.ndarray, hole: np.ndarray | None = None) -> float:
    """Mean over frames (those where ``region`` is non-empty) of the PSNR of the region's pixels."""
    pred_v, gt_v = _scored(pred, gt, hole)
    region_v = _nonempty_region(region, gt_v.shape)
    mse = [((p[r] - g[r]) ** 2).mean() for p, g, r in zip(pred_v, gt_v, region_v, strict=True) if r.any()]
    return float(_psnr_from_mse(np.array(mse)).mean())


def region_ssim(pred: np.ndarray, gt: np.ndarray, region: np.ndarray, hole: np.ndarray | None = None,
                win_size: int = SSIM_WIN_SIZE) -> float:
    """Mean over frames (those where ``region`` is non-empty) of the SSIM map's mean over the region."""
    pred_v, gt_v = _scored(pred, gt, hole)
    region_v = _nonempty_region(region, gt_v.shape)
    _check_window(gt_v.shape, win_size)
    values = [_ssim_map(p, g, win_size)[1][r].mean() for p, g, r in zip(pred_v, gt_v, region_v, strict=True)
              if r.any()]
    return float(np.mean(values))


def inpainting_metrics(pred: np.ndarray, gt: np.ndarray, hole: np.ndarray, region: np.ndarray | None = None,
                       win_size: int = SSIM_WIN_SIZE) -> dict:
    """One video's PSNR and SSIM on composited frames (and on ``region`` when given), with the window stated."""
    metrics = {"psnr": psnr(pred, gt, hole), "ssim": ssim(pred, gt, hole, win_size), "ssim_win_size": win_size}
    if region is not None:
        metrics.update(region_psnr=region_psnr(pred, gt, region, hole),
                       region_ssim=region_ssim(pred, gt, region, hole, win_size))
    return metrics


def _as_flow(flow: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(flow)
    if array.ndim < 3 or array.shape[-1] != 2:
        raise InputError(f"{name} must be [..., H, W, 2] (dx, dy) flow, got shape {np.shape(flow)}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise InputError(f"{name} must be a real-valued flow, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return array


def _flow_mask(mask: np.ndarray | None, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean mask of a flow's pixels (``shape[:-1]``); all pixels when None."""
    if mask is None:
        return np.ones(shape[:-1], dtype=bool)
    array = np.asarray(mask)
    if array.shape != tuple(shape[:-1]):
        raise InputError(f"{name} has shape {array.shape}, expected {tuple(shape[:-1])} "
                         "(the flow's shape without its last axis)")
    if array.dtype != bool and not np.isin(array, (0, 1)).all():
        raise InputError(f"{name} must be boolean or 0/1, got other values (dtype {array.dtype})")
    return array.astype(bool)


def epe(flow_pred: np.ndarray, flow_gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean end-point error ‖f_pred − f_gt‖₂ over pixels (inside ``mask`` when given; an empty mask raises)."""
    pred, gt = _as_flow(flow_pred, "flow_pred"), _as_flow(flow_gt, "flow_gt")
    if pred.shape != gt.shape:
        raise InputError(f"flow_pred has shape {pred.shape} and flow_gt {gt.shape}; they must match")
    inside = _flow_mask(mask, "mask", gt.shape)
    if not inside.any():
        raise InputError("mask is empty; the EPE inside it is undefined")
    return float(np.linalg.norm(pred - gt, axis=-1)[inside].mean())


def warp_back(next_frame: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame t+1 ``[H, W, C]`` sampled at ``(x + dx, y + dy)`` for every pixel of frame t (bilinear,
    float64), and where those points lie inside frame t+1 (elsewhere the sample means nothing)."""
    height, width = next_frame.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    x, y = xs + flow[..., 0], ys + flow[..., 1]
    grid = np.stack([2.0 * x / (width - 1) - 1.0, 2.0 * y / (height - 1) - 1.0], axis=-1)
    image = torch.from_numpy(np.ascontiguousarray(next_frame.transpose(2, 0, 1)))[None]
    warped = F.grid_sample(image, torch.from_numpy(grid)[None], mode="bilinear", padding_mode="zeros",
                           align_corners=True)
    inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
    return warped[0].numpy().transpose(1, 2, 0), inside


def warping_error(frames: np.ndarray, flows: np.ndarray, valid: np.ndarray | None = None) -> float:
    """E_warp of a video ``[T, H, W, 3]`` (0-255) with forward flows ``[T-1, H, W, 2]`` and optional
    non-occlusion masks ``[T-1, H, W]``: per pair the mean squared [0, 1] RGB error over valid pixels,
    then the mean over pairs. A pair without a valid pixel raises."""
    video = as_frames(frames, "frames") / 255.0
    count, height, width = video.shape[:3]
    if count < 2 or height < 2 or width < 2:
        raise InputError(f"frames has shape {video.shape}; the warping error needs >= 2 frames of >= 2x2 pixels")
    flow = _as_flow(flows, "flows")
    if flow.shape != (count - 1, height, width, 2):
        raise InputError(f"flows has shape {flow.shape}, expected {(count - 1, height, width, 2)} "
                         "(one forward flow per consecutive frame pair)")
    noc = _flow_mask(valid, "valid", flow.shape)
    errors = []
    for t in range(count - 1):
        warped, inside = warp_back(video[t + 1], flow[t])
        keep = noc[t] & inside
        if not keep.any():
            raise InputError(f"frame pair {t}->{t + 1} has no valid pixel inside the next frame")
        errors.append(((warped[keep] - video[t][keep]) ** 2).mean())
    return float(np.mean(errors))
