"""What every learned inpainter of a VOI clip reads and returns, in one place, so that VOIN's
generator and the baselines (STTN-like) see the same tensor and are checked by the same rules.

Inputs are [B, ·, T, H, W]: ``frames`` (3 channels in [-1, 1]) and the target's masks of one
channel in [0, 1], ``visible``, ``occluded`` (the hole) and ``amodal``; optionally the
flow-propagated frames. The network input is the frames with the hole zeroed (whatever the hole
held never reaches the network), the propagated pixels inside the hole, and the three masks. The
paper adapts its baselines by concatenating the visible mask; on a VOI sample amodal = visible ∪
occluded, so the third mask adds no information and keeps one input layout for every model.
"""

from __future__ import annotations

import torch
from torch import Tensor

from instseg.errors import InputError

FRAME_CHANNELS = 3
MASK_NAMES = ("visible", "occluded", "amodal")


def check_clip_inputs(frames: Tensor, masks: dict[str, Tensor], propagated: Tensor | None, use_propagated: bool,
                      multiple: int = 4) -> None:
    """InputError naming the first input whose shape does not fit the clip: frames [B, 3, T, H, W]
    with H, W multiples of ``multiple``, masks [B, 1, T, H, W], propagated frames exactly when
    ``use_propagated``, of the frames' shape."""
    if frames.dim() != 5 or frames.shape[1] != FRAME_CHANNELS:
        raise InputError(f"frames must be [B, 3, T, H, W], got shape {tuple(frames.shape)}")
    h, w = frames.shape[-2:]
    if h % multiple or w % multiple:
        raise InputError(f"frame height and width must be multiples of {multiple}, got {h}x{w}")
    for name, m in masks.items():
        if m.dim() != 5 or m.shape[1] != 1:
            raise InputError(f"{name} mask must be [B, 1, T, H, W], got shape {tuple(m.shape)}")
        for axis, label in ((0, "B"), (2, "T"), (3, "H"), (4, "W")):
            if m.shape[axis] != frames.shape[axis]:
                raise InputError(f"{name} mask has {label}={m.shape[axis]} but frames have "
                                 f"{label}={frames.shape[axis]}")
    if use_propagated and propagated is None:
        raise InputError("this generator reads flow-propagated frames (use_propagated): pass propagated")
    if not use_propagated and propagated is not None:
        raise InputError("propagated frames given to a generator that reads none (no use_propagated)")
    if propagated is not None and tuple(propagated.shape) != tuple(frames.shape):
        raise InputError(f"propagated frames have shape {tuple(propagated.shape)}, frames {tuple(frames.shape)}")


def masked_input(frames: Tensor, visible: Tensor, occluded: Tensor, amodal: Tensor,
                 propagated: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(network input [known, propagated · hole, visible, occluded, amodal] along channels, the
    known frames (hole zeroed), and ``occluded`` and ``amodal`` in the frames' dtype: bool masks too)."""
    visible, occluded, amodal = (m.to(frames.dtype) for m in (visible, occluded, amodal))
    known = frames * (1 - occluded)
    parts = [known] + ([propagated * occluded] if propagated is not None else []) + [visible, occluded, amodal]
    return torch.cat(parts, dim=1), known, occluded, amodal


def inpainting_output(raw: Tensor, known: Tensor, occluded: Tensor) -> dict[str, Tensor]:
    """``raw`` (the network's clip) and ``inpainted``: ``raw`` inside the hole, the input elsewhere."""
    return {"raw": raw, "inpainted": known + raw * occluded}
