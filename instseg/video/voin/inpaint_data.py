"""What VOIN's inpainting generator trains on: fixed-size crops of VOI clips around the target, and
the flow-propagated input of the with-flow rows, computed once per sample.

**Crop.** One square box per clip, the same for every frame: centred on the bounding box of the
target's amodal masks over the whole clip (``shape_training.clip_box``, enlarged by ``context`` on
each side), at least ``size`` px (a small target is cropped at native resolution, never enlarged:
the sensor noise and the object's texture keep their scale) and at most the frame, shifted to lie
inside the frame. A larger box is shrunk to ``size`` by area averaging (``F.interpolate(mode=
"area")``: each crop cell is the mean of the frame pixels it covers). The hole at crop scale is
every cell touching a hole pixel, so the known cells are means of known pixels only (nothing of
the occluder leaks into the generator's input); amodal = cells at least half amodal, or hole;
visible = cells at least half visible, not hole.

**Target.** Inside the hole the clean frames; outside it the corrupted ones. VOI fills only the
target's occluded part ("the fill-up regions are restricted to occluded regions of the target
object"); a synthetic occluder's pixels outside the target stay, and a valid-region L1 against the
clean frames would train the generator to erase them, which no metric or use asks of it.

**Propagated input.** DIS initial flow on the corrupted frames (``flow_targets.initial_flows``), or
what a ``flows(sample)`` hook returns (a flow-completion net), then ``propagation.propagate``
inside the amodal region, on the full frames; it is deterministic, so :class:`PropagationCache`
computes it once per sample and every row and seed reuses it. At crop scale a cell carries the
mean of its propagated pixels when at least half of it was filled, zero elsewhere (the
generator's "zeros where none arrived").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from instseg.errors import InputError
from instseg.video.voin.data.samples import VoiSample
from instseg.video.voin.flow_targets import initial_flows
from instseg.video.voin.params import voin_config
from instseg.video.voin.propagation import Propagation, propagate
from instseg.video.voin.shape_training import Box, augment, clip_box

FlowSource = Callable[[VoiSample], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class CropSettings:
    """Crop size (px, a multiple of 4 for the generator) and margin (fraction of the box's larger side)."""

    size: int = 32
    context: float = 0.1

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> CropSettings:
        return voin_config(cls, values, "voin.inpaint.crop")

    def check(self) -> None:
        if self.size < 8 or self.size % 4 or self.context < 0:
            raise InputError(f"crop size must be a multiple of 4 >= 8 and context >= 0, got {self.size}, "
                             f"{self.context}", record="voin.inpaint.crop")


def sample_name(sample: VoiSample) -> str:
    m = sample.meta
    return f"video {m.get('video_id', '?')} track {m.get('track_id', '?')} start {m.get('start', '?')}"


def crop_box(amodal: np.ndarray, crop: CropSettings) -> Box:
    """The clip's square box (module docstring), inside the frame: (y0, x0, side)."""
    h, w = amodal.shape[1:]
    y0, x0, side0 = clip_box(amodal, crop.context)
    side = min(max(side0, crop.size), h, w)
    cy, cx = y0 + side0 / 2, x0 + side0 / 2
    y = int(np.clip(round(cy - side / 2), 0, h - side))
    x = int(np.clip(round(cx - side / 2), 0, w - side))
    return y, x, side


def _area(x: np.ndarray, box: Box, size: int) -> np.ndarray:
    """(L, H, W, C) -> the box's (L, size, size, C) as float64, area-averaged when the box is larger."""
    y0, x0, side = box
    part = np.asarray(x, dtype=np.float64)[:, y0:y0 + side, x0:x0 + side]
    if side == size:
        return part
    t = torch.from_numpy(np.ascontiguousarray(part.transpose(0, 3, 1, 2)))
    return F.interpolate(t, size=(size, size), mode="area").numpy().transpose(0, 2, 3, 1)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


@dataclass
class InpaintCrop:
    """One clip at crop scale, compact (uint8 frames, bool masks): ``corrupted``, ``target`` and
    ``propagated`` (L, S, S, 3), ``visible``, ``occluded`` (the hole), ``amodal`` and ``filled`` (where
    ``propagated`` holds a pixel) (L, S, S); the target's class ``label``, the ``box`` in the frame."""

    corrupted: np.ndarray
    target: np.ndarray
    visible: np.ndarray
    occluded: np.ndarray
    amodal: np.ndarray
    label: int
    box: Box
    name: str
    propagated: np.ndarray | None = None
    filled: np.ndarray | None = None

    @property
    def length(self) -> int:
        return int(self.corrupted.shape[0])


def target_frames(sample: VoiSample) -> np.ndarray:
    """Clean inside the hole, corrupted elsewhere (module docstring)."""
    return np.where(sample.occluded[..., None], sample.clean, sample.corrupted)


def crop_sample(sample: VoiSample, crop: CropSettings, label: int = 0, propagation: Propagation | None = None,
                box: Box | None = None) -> InpaintCrop:
    """``sample`` at crop scale (its :func:`crop_box` unless ``box`` is given), with the cropped
    propagated input when ``propagation`` (of the whole sample) is given."""
    name = sample_name(sample)
    box = crop_box(sample.amodal, crop) if box is None else box
    if not sample.amodal.any():
        raise InputError("the target has no amodal pixel in any frame", record=name)

    def frac(m: np.ndarray) -> np.ndarray:
        return _area(m[..., None], box, crop.size)[..., 0]

    hole = frac(sample.occluded) > 0
    out = InpaintCrop(_to_uint8(_area(sample.corrupted, box, crop.size)),
                      _to_uint8(_area(target_frames(sample), box, crop.size)),
                      (frac(sample.visible) >= 0.5) & ~hole, hole, (frac(sample.amodal) >= 0.5) | hole,
                      int(label), box, name)
    if propagation is not None:
        if propagation.frames.shape != sample.corrupted.shape:
            raise InputError(f"propagated frames {propagation.frames.shape} do not fit the sample's "
                             f"{sample.corrupted.shape}", record=name)
        weight = frac(propagation.filled)
        colours = _area(np.where(propagation.filled[..., None], propagation.frames, 0), box, crop.size)
        out.filled = weight >= 0.5
        out.propagated = np.where(out.filled[..., None], _to_uint8(colours / np.maximum(weight, 1e-12)[..., None]),
                                  0).astype(np.uint8)
    return out


def track_key(sample: VoiSample) -> tuple[int, int]:
    """``(video_id, track_id)`` of the sample's target: how annotation-file lookups find it."""
    return int(sample.meta["video_id"]), int(sample.meta["track_id"])


def propagate_sample(sample: VoiSample, flows: Mapping[str, np.ndarray]) -> Propagation:
    """The sample's known object pixels propagated into its hole along ``flows`` (both directions)."""
    name = sample_name(sample)
    missing = [k for k in ("forward", "backward") if k not in flows]
    if missing:
        raise InputError(f"the flow source returned no {missing} flow", record=name)
    return propagate(sample.corrupted, sample.occluded, sample.amodal, flows["forward"], flows["backward"],
                     record=name)


def dis_flows(sample: VoiSample) -> dict[str, np.ndarray]:
    """The default flow source: DIS on the corrupted frames, both directions."""
    return initial_flows(sample.corrupted)


class PropagationCache:
    """Flow-propagated frames per sample, computed on first request and kept: ``flows`` gives a
    sample's flows (``initial_flows``' keys and shapes; default DIS, a flow-completion net plugs in
    here). ``computed`` counts the propagations run and ``seconds`` their time (flow included)."""

    def __init__(self, flows: FlowSource | None = None) -> None:
        self.flows = flows or dis_flows
        self.computed = 0
        self.seconds = 0.0
        self._store: dict[str, Propagation] = {}

    def __call__(self, sample: VoiSample) -> Propagation:
        name = sample_name(sample)
        if name not in self._store:
            start = time.perf_counter()
            self._store[name] = propagate_sample(sample, self.flows(sample))
            self.computed += 1
            self.seconds += time.perf_counter() - start
        return self._store[name]

    def __len__(self) -> int:
        return len(self._store)

    @property
    def seconds_per_sample(self) -> float:
        return self.seconds / max(self.computed, 1)


def to_unit(frames: Tensor) -> Tensor:
    """uint8 0-255 -> float [-1, 1] (the generator's range)."""
    return frames.float() / 127.5 - 1.0


def from_unit(frames: Tensor) -> Tensor:
    """float [-1, 1] -> float 0-255, clamped."""
    return ((frames.clamp(-1, 1) + 1.0) * 127.5).clamp(0, 255)


MASK_KEYS: tuple[str, ...] = ("visible", "occluded", "amodal")


def clip_tensors(crop: InpaintCrop, start: int = 0, length: int | None = None, code: int = 0,
                 propagated: bool = False) -> dict[str, Tensor]:
    """Frames ``start .. start + length - 1`` of a crop as the generator's tensors, channel-first
    [C, T, S, S]: ``frames`` (corrupted) and ``target`` in [-1, 1], the three masks as 0/1 floats,
    and with ``propagated`` the propagated frames (zero where nothing arrived); every tensor under
    the same :func:`shape_training.augment` symmetry ``code`` (flips, transpose, time reversal)."""
    length = crop.length if length is None else length
    if not 0 <= start <= crop.length - length or length < 1:
        raise InputError(f"frames {start}..{start + length - 1} outside the {crop.length}-frame crop",
                         record=crop.name)
    window = slice(start, start + length)

    def rgb(x: np.ndarray) -> Tensor:  # (T, S, S, 3) uint8 -> (3, T, S, S) in [-1, 1]
        return augment(to_unit(torch.from_numpy(np.ascontiguousarray(x[window]))).permute(0, 3, 1, 2),
                       code).permute(1, 0, 2, 3)

    def mask(m: np.ndarray) -> Tensor:
        return augment(torch.from_numpy(np.ascontiguousarray(m[window])).float(), code)[None]

    out = {"frames": rgb(crop.corrupted), "target": rgb(crop.target), **{k: mask(getattr(crop, k)) for k in MASK_KEYS}}
    if propagated:
        if crop.propagated is None:
            raise InputError("this crop was built without the propagated input", record=crop.name)
        out["propagated"] = rgb(crop.propagated) * mask(crop.filled)
    return out
