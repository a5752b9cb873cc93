"""The non-learned Table 5.8 baselines: flow-guided propagation, then image inpainting for the rest.

The thesis: "both DFVI and FGVC conduct flow completion for inpainting, and fill the remaining
unseen video regions using only image inpainting method" (DeepFill). Ours, on a VOI sample's
frames (L, H, W, 3) uint8 and masks (L, H, W) bool, with flows as ``flow_targets`` gives them:

* ``dfvi_like``: the flows as given → :func:`propagation.propagate` (hole ∩ amodal only, along flow
  that passes the forward-backward check) → OpenCV's TELEA inpainting, frame by frame, of every
  hole pixel propagation left. DFVI completes its flow with a learned network; here the flows are
  whatever the caller passes: DIS as it is (no completion), the output of ``flow``'s completion
  net, or the exact flow (the oracle).
* ``fgvc_like``: the same after edge-guided flow completion (:mod:`edge_flow`): the given flow
  inside the hole is discarded and re-solved from the flow around it, broken across flow edges
  and the amodal contour.
* ``cv2_inpaint_only``: TELEA on the whole hole, no flow: the floor every method must beat.

OpenCV's TELEA stands in for DeepFill (a learned image inpainter, not available offline). The hole
is the ``occluded`` mask; ``visible`` carries nothing the methods read (on a VOI sample it is
amodal minus the hole, which is what propagation samples from) and is only checked. Hole pixels are
zeroed before TELEA, so no method reads what the corrupted frames show there, and every pixel
outside the hole is returned bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import cv2
import numpy as np

from instseg.errors import InputError
from instseg.video.voin.edge_flow import CANNY_HIGH, CANNY_LOW, CANNY_SIGMA, edge_guided_flows
from instseg.video.voin.flow_targets import DIRECTIONS
from instseg.video.voin.params import voin_config
from instseg.video.voin.propagation import CONSISTENCY_PX, check_propagation_inputs, filled_share, propagate


@dataclass(frozen=True)
class ClassicalConfig:
    """Settings of the non-learned baselines."""

    inpaint_radius: int = 3  # px, OpenCV TELEA's neighbourhood
    consistency_px: float = CONSISTENCY_PX  # forward-backward threshold of propagation
    canny_sigma: float = CANNY_SIGMA  # FGVC-like flow edges
    canny_low: float = CANNY_LOW
    canny_high: float = CANNY_HIGH

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> "ClassicalConfig":
        return voin_config(cls, params, "voin.classical")

    def check(self) -> None:
        if self.inpaint_radius < 1 or self.consistency_px <= 0 or self.canny_sigma < 0:
            raise InputError("need inpaint_radius >= 1, consistency_px > 0 and canny_sigma >= 0",
                             record="voin.classical")
        if not 0 <= self.canny_low <= self.canny_high:
            raise InputError(f"need 0 <= canny_low <= canny_high, got {self.canny_low}, {self.canny_high}",
                             record="voin.classical")


FLOW_STAGES = {"cv2_inpaint_only": "none", "dfvi_like": "given", "fgvc_like": "edge_guided"}  # per baseline


@dataclass
class Completion:
    """Completed frames (uint8) and how each hole pixel was filled: by flow ``propagated`` or by
    image ``inpainted`` (disjoint; together exactly the hole)."""

    frames: np.ndarray
    propagated: np.ndarray
    inpainted: np.ndarray

    @property
    def propagated_fraction(self) -> float:
        """The share of the hole filled by propagation (NaN without a hole)."""
        return filled_share(self.propagated, self.inpainted)


def check_sample_inputs(frames: np.ndarray, visible: np.ndarray, occluded: np.ndarray, amodal: np.ndarray,
                        flows: Mapping[str, np.ndarray] | None, record: str | None = None) -> None:
    """InputError unless frames are uint8 (L, H, W, 3), the masks bool (L, H, W) with no pixel both
    visible and occluded, and ``flows`` (when given) both directions of ``flow_targets``."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) < 1:
        raise InputError(f"frames must be uint8 (L, H, W, 3), got {frames.dtype} {frames.shape}", record=record)
    for name, m in (("visible", visible), ("occluded", occluded), ("amodal", amodal)):
        if m.dtype != bool or m.shape != frames.shape[:3]:
            raise InputError(f"{name} must be bool {frames.shape[:3]}, got {m.dtype} {m.shape}", record=record)
    if (visible & occluded).any():
        raise InputError(f"{int((visible & occluded).sum())} pixels are both visible and occluded", record=record)
    if flows is None:
        return
    missing = [d for d in DIRECTIONS if d not in flows]
    if missing:
        raise InputError(f"flows lack {missing} (need both directions of flow_targets)", record=record)
    check_propagation_inputs(frames, occluded, amodal, np.asarray(flows["forward"]), np.asarray(flows["backward"]),
                             record)


def inpaint_frames(frames: np.ndarray, fill: np.ndarray, radius: int = 3) -> np.ndarray:
    """OpenCV TELEA of the ``fill`` pixels (L, H, W) of each frame, from the other pixels only (the
    fill pixels are zeroed first); every other pixel bit for bit."""
    out = frames.copy()
    for t in np.flatnonzero(fill.reshape(len(fill), -1).any(axis=1)):
        source = np.where(fill[t][..., None], 0, frames[t]).astype(np.uint8)
        painted = cv2.inpaint(source, fill[t].astype(np.uint8), radius, cv2.INPAINT_TELEA)
        out[t][fill[t]] = painted[fill[t]]
    return out


def complete(frames: np.ndarray, visible: np.ndarray, occluded: np.ndarray, amodal: np.ndarray,
             flows: Mapping[str, np.ndarray] | None, flow_stage: str, cfg: ClassicalConfig = ClassicalConfig(),
             record: str | None = None) -> Completion:
    """Fill the hole (``occluded``) with one baseline's stages: ``flow_stage`` "none" (TELEA only),
    "given" (propagate along ``flows`` as they are: DFVI-like) or "edge_guided" (complete the
    flows inside the hole first: FGVC-like), then TELEA for whatever propagation left."""
    if flow_stage not in FLOW_STAGES.values():
        raise InputError(f"flow_stage must be one of {sorted(set(FLOW_STAGES.values()))}, got {flow_stage!r}",
                         record=record)
    frames, visible, occluded, amodal = (np.asarray(x) for x in (frames, visible, occluded, amodal))
    check_sample_inputs(frames, visible, occluded, amodal, None if flow_stage == "none" else flows, record)
    if flow_stage == "none":
        propagated, filled = frames, np.zeros_like(occluded)
    else:
        if flow_stage == "edge_guided":
            flows = edge_guided_flows(flows, occluded, amodal, cfg.canny_sigma, cfg.canny_low, cfg.canny_high, record)
        result = propagate(frames, occluded, amodal, flows["forward"], flows["backward"], cfg.consistency_px, record)
        propagated, filled = result.frames, result.filled
    rest = occluded & ~filled
    return Completion(inpaint_frames(propagated, rest, cfg.inpaint_radius), filled, rest)


def cv2_inpaint_only(frames: np.ndarray, visible: np.ndarray, occluded: np.ndarray, amodal: np.ndarray,
                     flows: Mapping[str, np.ndarray] | None = None, cfg: ClassicalConfig = ClassicalConfig(),
                     record: str | None = None) -> np.ndarray:
    """Frame-by-frame TELEA of the whole hole; ``flows`` are ignored."""
    return complete(frames, visible, occluded, amodal, None, "none", cfg, record).frames


def dfvi_like(frames: np.ndarray, visible: np.ndarray, occluded: np.ndarray, amodal: np.ndarray,
              flows: Mapping[str, np.ndarray], cfg: ClassicalConfig = ClassicalConfig(),
              record: str | None = None) -> np.ndarray:
    """Propagation along the given (completed, or not) flows, then TELEA."""
    return complete(frames, visible, occluded, amodal, flows, "given", cfg, record).frames


def fgvc_like(frames: np.ndarray, visible: np.ndarray, occluded: np.ndarray, amodal: np.ndarray,
              flows: Mapping[str, np.ndarray], cfg: ClassicalConfig = ClassicalConfig(),
              record: str | None = None) -> np.ndarray:
    """Edge-guided flow completion of the given flows, propagation, then TELEA."""
    return complete(frames, visible, occluded, amodal, flows, "edge_guided", cfg, record).frames
