"""Table 5.8's non-learned rows on a VOI split: each classical baseline with DIS flows and with the
exact flows (the oracle: an upper bound on what flow completion can give), scored as the published
video-inpainting evaluations score (``evaluation.inpainting``: composited PSNR / SSIM, window 65)
and on the target's amodal region.

Per sample only the frames with a hole are scored (a frame without one is its own ground truth:
PSNR +inf); a sample's number is the mean over those frames, a table row the mean over samples.
Beside the image metrics: the flow EPE inside the hole (both directions, each flow on its source
frame's hole) of the flow the method propagates along, the share of the hole propagation filled,
and seconds per sample of the method alone (flows are computed once per sample, timed apart).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from instseg.evaluation.inpainting import SSIM_WIN_SIZE, epe, inpainting_metrics
from instseg.video.voin.classical import ClassicalConfig, complete
from instseg.video.voin.data.samples import VoiSample
from instseg.video.voin.edge_flow import edge_guided_flows
from instseg.video.voin.flow_targets import initial_flows, sample_flows

METRICS = ("psnr", "ssim", "region_psnr", "region_ssim", "hole_epe", "propagated_fraction", "seconds")


def hole_epe(flows: Mapping[str, np.ndarray], exact: Mapping[str, np.ndarray], hole: np.ndarray) -> float:
    """EPE of ``flows`` against ``exact`` over the hole pixels of each flow's source frame (NaN without a hole)."""
    masks = {"forward": hole[:-1], "backward": hole[1:]}
    if not hole[:-1].any() and not hole[1:].any():
        return float("nan")
    pred = np.concatenate([flows[d][masks[d]] for d in masks])
    gt = np.concatenate([exact[d][masks[d]] for d in masks])
    return epe(pred[None], gt[None])


def evaluate_sample(sample: VoiSample, scenes: Mapping[int, dict[str, Any]], cfg: ClassicalConfig = ClassicalConfig(),
                    record: str | None = None, win_size: int = SSIM_WIN_SIZE) -> list[dict[str, Any]]:
    """One row per (method, flows) for one sample, plus the seconds its DIS flows took; SSIM with
    window ``win_size`` (the published 65 unless frames are smaller)."""
    t0 = time.perf_counter()
    dis = initial_flows(sample.corrupted)
    dis_seconds = time.perf_counter() - t0
    exact = sample_flows(sample, scenes)
    scored = sample.occluded.any(axis=(1, 2))
    rows = []

    def run(method: str, flow_name: str, stage: str, flows: Mapping[str, np.ndarray] | None, extra: float = 0.0,
            epe_of: Mapping[str, np.ndarray] | None = None) -> None:
        t = time.perf_counter()
        done = complete(sample.corrupted, sample.visible, sample.occluded, sample.amodal, flows, stage, cfg, record)
        seconds = time.perf_counter() - t + extra
        metrics = inpainting_metrics(done.frames[scored], sample.clean[scored], sample.occluded[scored],
                                     sample.amodal[scored], win_size)
        rows.append(dict(method=method, flows=flow_name, kind=sample.meta.get("kind"), seconds=seconds,
                         propagated_fraction=done.propagated_fraction,
                         hole_epe=hole_epe(epe_of, exact, sample.occluded) if epe_of is not None else float("nan"),
                         **{k: metrics[k] for k in ("psnr", "ssim", "region_psnr", "region_ssim")}))

    run("cv2_inpaint_only", "-", "none", None)
    for name, flows in (("dis", dis), ("exact", exact)):
        run("dfvi_like", name, "given", flows, epe_of=flows)
        t = time.perf_counter()
        completed = edge_guided_flows(flows, sample.occluded, sample.amodal, cfg.canny_sigma, cfg.canny_low,
                                      cfg.canny_high, record)
        run("fgvc_like", name, "given", completed, extra=time.perf_counter() - t, epe_of=completed)
    for row in rows:
        row["dis_seconds"] = dis_seconds
    return rows


def _mean(values: Iterable[float]) -> float:
    kept = [v for v in values if not np.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


def summarise(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean of every metric per (method, flows) over the samples (NaNs left out), in first-seen
    order, with the sample count."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["flows"]), []).append(row)
    return [dict(method=m, flows=f, samples=len(g), **{k: _mean(r[k] for r in g) for k in METRICS})
            for (m, f), g in groups.items()]
