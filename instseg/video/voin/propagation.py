"""Flow-guided propagation of known object pixels into the hole (VOIN section 5.4.3).

As DFVI and FGVC, which VOIN follows: a flow is trusted at a pixel only when it passes the
forward-backward check ‖f_fw(x) + f_bw(x + f_fw(x))‖ < 5 px (the thesis's threshold), and known
pixels are carried into the hole along trusted flow in both temporal directions. VOIN's change:
only pixels *within the target's amodal region* are warped, so the hole is never filled with
background colours. Here that means: a hole pixel is written only inside the frame's amodal mask,
and its colour comes only from known pixels (amodal and not hole) of the target in another frame;
every other pixel of the output is the input's, bit for bit. Hole pixels that neither direction
reaches stay unfilled and are returned as a mask, for the image-inpainting stage.

Order, deterministic: the forward-in-time pass walks frames from the last to the first, each
frame taking colours from its successor (known pixels, or ones the pass already filled there), so
a chain of trusted flows carries a pixel any number of frames; the backward pass does the same
from the first frame on. Each candidate keeps its temporal distance (frames travelled; with
bilinear sampling, the mean over the four source pixels). Per pixel the nearest candidate wins;
at equal distance the two candidates are averaged. Sampling is bilinear
(``evaluation.inpainting.warp_back``), and a sample counts only if every source pixel with
non-zero weight is usable, so a hole or background pixel never leaks in through interpolation.

Flows follow ``flow_targets``: ``forward[k]`` = frame k → k+1, ``backward[k]`` = frame k+1 → k.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from instseg.errors import InputError
from instseg.evaluation.inpainting import warp_back

CONSISTENCY_PX = 5.0  # the thesis's forward-backward threshold (after DFVI / FGVC)
_FULL = 1.0 - 1e-6  # a bilinear sample is usable when all of its weight lies on usable pixels


def consistency_error(flow_fw: np.ndarray, flow_bw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """‖f_fw(x) + f_bw(x + f_fw(x))‖ per pixel of the first frame (H, W) float64, and where
    x + f_fw(x) lies inside the second frame (elsewhere the error means nothing)."""
    if flow_fw.shape != flow_bw.shape or flow_fw.ndim != 3 or flow_fw.shape[-1] != 2:
        raise InputError(f"flows must both be (H, W, 2), got {flow_fw.shape} and {flow_bw.shape}")
    back, inside = warp_back(np.asarray(flow_bw, dtype=np.float64), np.asarray(flow_fw, dtype=np.float64))
    return np.linalg.norm(flow_fw + back, axis=-1), inside


def reliable(flow_fw: np.ndarray, flow_bw: np.ndarray, threshold: float = CONSISTENCY_PX) -> np.ndarray:
    """Pixels of the first frame whose forward flow passes the forward-backward check (bool H, W)."""
    error, inside = consistency_error(flow_fw, flow_bw)
    return inside & (error < threshold)


@dataclass
class Propagation:
    """The frames with propagated pixels (input dtype), which hole pixels were ``filled`` and which
    stay ``unfilled`` (hole ∩ amodal, not reached), and the temporal ``distance`` of each filled
    pixel's source (NaN elsewhere)."""

    frames: np.ndarray
    filled: np.ndarray
    unfilled: np.ndarray
    distance: np.ndarray

    @property
    def fill_rate(self) -> float:
        return filled_share(self.filled, self.unfilled)


def filled_share(filled: np.ndarray, rest: np.ndarray) -> float:
    """|filled| / |filled ∪ rest| of two disjoint masks (NaN when both are empty)."""
    total = int(filled.sum() + rest.sum())
    return float(filled.sum() / total) if total else float("nan")


def check_propagation_inputs(frames: np.ndarray, hole: np.ndarray, amodal: np.ndarray, forward: np.ndarray,
                             backward: np.ndarray, record: str | None = None) -> None:
    """InputError unless frames are (L, H, W, 3), hole and amodal bool (L, H, W) and both flows
    finite (L-1, H, W, 2); ``record`` names the sample."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) < 1:
        raise InputError(f"frames must be (L, H, W, 3), got {frames.shape}", record=record)
    n, h, w = frames.shape[:3]
    for name, m in (("hole", hole), ("amodal", amodal)):
        if m.shape != (n, h, w) or m.dtype != bool:
            raise InputError(f"{name} must be bool {(n, h, w)}, got {m.dtype} {m.shape}", record=record)
    for name, f in (("forward", forward), ("backward", backward)):
        if f.shape != (n - 1, h, w, 2):
            raise InputError(f"{name} flows must be {(n - 1, h, w, 2)} (one per consecutive pair), got {f.shape}",
                             record=record)
        if not np.isfinite(f).all():
            raise InputError(f"{name} flows contain NaN or infinite values", record=record)


def _pass(frames: np.ndarray, usable: np.ndarray, target: np.ndarray, flows: np.ndarray, checks: np.ndarray,
          order: range, step: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """One temporal direction: for frames in ``order``, colours of ``target`` pixels sampled in frame
    t + step along ``flows`` (indexed by t) where the flow is trusted and the sample usable."""
    colour = frames.astype(np.float64)
    reach = usable.copy()
    dist = np.where(usable, 0.0, np.nan)
    for t in order:
        s = t + step
        pair = t if step == 1 else t - 1
        flow, check = flows[pair], checks[pair]
        trusted = reliable(flow, check, threshold)
        stack = np.concatenate([np.where(reach[s][..., None], colour[s], 0.0), reach[s][..., None].astype(float),
                                np.where(reach[s], dist[s], 0.0)[..., None]], axis=-1)
        sampled, inside = warp_back(stack, flow.astype(np.float64))
        ok = target[t] & ~reach[t] & trusted & inside & (sampled[..., 3] >= _FULL)
        colour[t][ok] = sampled[ok][:, :3]
        dist[t][ok] = sampled[ok][:, 4] + 1.0
        reach[t] |= ok
    return colour, np.where(target, dist, np.nan)


def propagate(frames: np.ndarray, hole: np.ndarray, amodal: np.ndarray, forward: np.ndarray, backward: np.ndarray,
              threshold: float = CONSISTENCY_PX, record: str | None = None) -> Propagation:
    """Fill ``hole ∩ amodal`` of ``frames`` (L, H, W, 3) from the target's known pixels in other
    frames along trusted flow, both directions (see the module docstring); ``record`` names the
    sample in errors."""
    frames, hole, amodal = np.asarray(frames), np.asarray(hole), np.asarray(amodal)
    forward, backward = np.asarray(forward), np.asarray(backward)
    check_propagation_inputs(frames, hole, amodal, forward, backward, record)
    n = len(frames)
    target = hole & amodal
    usable = amodal & ~hole
    # forward in time: frame t samples frame t+1 with the forward flow, checked by the backward one
    col_f, dist_f = _pass(frames, usable, target, forward, backward, range(n - 2, -1, -1), 1, threshold)
    col_b, dist_b = _pass(frames, usable, target, backward, forward, range(1, n), -1, threshold)
    has_f, has_b = ~np.isnan(dist_f), ~np.isnan(dist_b)
    df, db = np.where(has_f, dist_f, np.inf), np.where(has_b, dist_b, np.inf)
    take_f = has_f & (df < db - 1e-9)
    take_b = has_b & (db < df - 1e-9)
    tie = has_f & has_b & ~take_f & ~take_b
    out = frames.copy()
    values = np.where(take_f[..., None], col_f, np.where(take_b[..., None], col_b, 0.5 * (col_f + col_b)))
    filled = take_f | take_b | tie
    if np.issubdtype(frames.dtype, np.integer):
        info = np.iinfo(frames.dtype)
        values = np.clip(np.round(values), info.min, info.max)
    out[filled] = values[filled].astype(frames.dtype)
    distance = np.where(filled, np.minimum(df, db), np.nan)
    return Propagation(out, filled, target & ~filled, distance)
