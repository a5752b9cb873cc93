"""VOIN's inference on a whole video: each target object's occluded part filled, in sliding windows.

For one object over one clip (section 5.4, Figures 5.6-5.7):

1. **amodal masks**: given, or predicted by the run's shape model from the visible masks (the crop
   around the clip's visible union it was trained with, :func:`shape_training.predict_amodal`);
   the hole is ``amodal & ~visible``, the object's own occluded part;
2. **flow**: OpenCV DIS on consecutive input frames (``flow_targets.initial_flows``), completed by the
   run's flow net when it has one (``flow.complete_clip_flows``);
3. **propagation** of the object's known pixels into the hole along trusted flow, inside the amodal
   region only (``propagation.propagate``);
4. the **generator** fills what propagation left. A generator built with ``use_propagated`` gets
   the input frames, the whole hole and the propagated pixels as its extra channels (zeros where
   none arrived); one without gets the frames with the propagated pixels pasted in and only the
   remaining hole. Frames are in [-1, 1] and padded (edge) to multiples of 4, masks with zeros.

Output = input outside the hole, the propagated colours where propagation reached, the
generator's elsewhere in the hole. Several objects are inpainted one after another on the same
frames (each sees the ones before it completed); DIS runs once per clip on the input frames.

**Windows.** :func:`inpaint_video` reads the video lazily and cuts it into windows of ``window``
frames with ``overlap`` frames of context on each side (fewer at the video's ends); a window's
centre frames are written as soon as it is done and only ``window + 2 overlap`` input frames are
held at once, so peak memory does not grow with the video's length. What is exactly equal to
whole-video inference: the generator's output at a frame depends on the frames within its
temporal receptive field R (``OcclusionAwareGenerator.temporal_receptive_field``; clip ends are
zero-padded in both cases), so with given amodal masks and no propagation, ``overlap >= K R``
for K objects gives bit-identical frames (each object reads the previous one's output over R more
frames). The shape model attends over the whole window and propagation follows flow chains of
any length, so with either the windows change the result where a window's edge cuts them: the
default overlap (R) makes the windows exact for the generator of one object, not for those.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import numpy as np
import torch

from instseg.errors import InputError
from instseg.video.voin.flow import complete_clip_flows
from instseg.video.voin.flow_targets import initial_flows
from instseg.video.voin.generator import OcclusionAwareGenerator
from instseg.video.voin.params import voin_config
from instseg.video.voin.propagation import CONSISTENCY_PX, propagate
from instseg.video.voin.shape_training import predict_amodal

if TYPE_CHECKING:
    from instseg.video.voin.runs import VoinRun

T = TypeVar("T")
MULTIPLE = 4  # the generator's two stride-2 layers


@dataclass(frozen=True)
class InpaintConfig:
    """The pipeline's settings beyond the models' own configs (stored in a VOIN run)."""

    shape_crop_size: int = 48  # ShapeTraining.crop_size the shape model was trained at
    shape_context: float = 0.25  # ShapeTraining.context
    propagate: bool = True  # False: the generator fills the whole hole (no flow at all)
    consistency_px: float = CONSISTENCY_PX  # forward-backward check of the propagation

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> InpaintConfig:
        return voin_config(cls, values, "voin.inpaint")

    def check(self) -> None:
        if self.shape_crop_size < 8 or self.shape_context < 0 or self.consistency_px <= 0:
            raise InputError("need shape_crop_size >= 8, shape_context >= 0 and consistency_px > 0",
                             record="voin.inpaint")


@dataclass
class Inpainted:
    """One object's result on a clip: the frames, its ``hole`` and the hole pixels ``propagated``
    (the rest of the hole came from the generator), all (L, H, W)."""

    frames: np.ndarray
    hole: np.ndarray
    propagated: np.ndarray


def check_amodal_source(run: VoinRun, amodal_given: bool) -> None:
    """InputError unless the amodal masks are given or the run can predict them."""
    if not amodal_given and run.shape is None:
        raise InputError("the VOIN run has no shape model to predict amodal masks: pass them (--amodal-masks)",
                         record="voin run")


def amodal_masks(run: VoinRun, visible: np.ndarray, amodal: np.ndarray | None = None, label: int = 0
                 ) -> np.ndarray:
    """The object's amodal masks (L, H, W) bool: ``amodal`` if given, else the shape model's
    prediction of class ``label`` (0: unknown); the visible part always counts as amodal."""
    visible = np.asarray(visible, dtype=bool)
    if amodal is not None:
        return np.asarray(amodal, dtype=bool) | visible
    check_amodal_source(run, False)
    if not visible.any():  # nothing to complete a shape from
        return visible.copy()
    s = run.settings
    return predict_amodal(run.shape, [visible], [label], s.shape_crop_size, s.shape_context)[0] | visible


def _clip(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """(L, H, W, 3) uint8 -> [1, 3, L, H, W] in [-1, 1]."""
    return torch.from_numpy(frames).to(device).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0


def _mask(mask: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(mask).to(device)[None, None].float()


def _pad(x: np.ndarray, ph: int, pw: int, mode: str) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, ph), (0, pw)) + ((0, 0),) * (x.ndim - 3), mode=mode)


@torch.no_grad()
def generate(generator: OcclusionAwareGenerator, frames: np.ndarray, visible: np.ndarray, occluded: np.ndarray,
             amodal: np.ndarray, propagated: np.ndarray | None = None, arrived: np.ndarray | None = None
             ) -> np.ndarray:
    """The generator's raw clip (L, H, W, 3) uint8 for frames (L, H, W, 3) uint8 of any size (padded
    to multiples of 4 and cropped back); ``propagated`` frames (uint8) count where ``arrived``."""
    device = next(generator.parameters()).device
    h, w = frames.shape[1:3]
    ph, pw = -h % MULTIPLE, -w % MULTIPLE
    masks = [_mask(_pad(m, ph, pw, "constant"), device) for m in (visible, occluded, amodal)]
    prop = None
    if propagated is not None:
        prop = _clip(_pad(propagated, ph, pw, "edge"), device) * _mask(_pad(arrived, ph, pw, "constant"), device)
    raw = generator.eval()(_clip(_pad(frames, ph, pw, "edge"), device), *masks, prop)["raw"]
    out = ((raw[0] + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0)
    return out[:, :h, :w].cpu().numpy()


def inpaint_object(run: VoinRun, frames: np.ndarray, visible: np.ndarray, amodal: np.ndarray,
                   flows: Mapping[str, np.ndarray] | None = None) -> Inpainted:
    """One object's hole (``amodal & ~visible``) filled in ``frames`` (L, H, W, 3) uint8 (steps 2-4
    of the module docstring); ``flows``: DIS flows of the clip, computed here when None."""
    visible, amodal = np.asarray(visible, dtype=bool), np.asarray(amodal, dtype=bool) | visible
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InputError(f"frames must be (L, H, W, 3) uint8, got {frames.dtype} {frames.shape}")
    if visible.shape != frames.shape[:3] or amodal.shape != frames.shape[:3]:
        raise InputError(f"masks {visible.shape} / {amodal.shape} do not fit frames {frames.shape[:3]}")
    hole = amodal & ~visible
    out, done = frames.copy(), np.zeros_like(hole)
    if not hole.any():
        return Inpainted(out, hole, done)
    known = frames
    if run.settings.propagate and len(frames) > 1:
        flows = initial_flows(frames) if flows is None else flows
        if run.flow is not None:
            flows = complete_clip_flows(run.flow, frames, visible, amodal, flows)
        prop = propagate(frames, hole, amodal, flows["forward"], flows["backward"], run.settings.consistency_px)
        known, done = prop.frames, prop.filled
        out[done] = known[done]
    remaining = hole & ~done
    if remaining.any():
        if run.generator.cfg.use_propagated:
            raw = generate(run.generator, frames, visible, hole, amodal, known, done)
        else:
            raw = generate(run.generator, known, visible, remaining, amodal)
        out[remaining] = raw[remaining]
    return Inpainted(out, hole, done)


class ObjectMasks(NamedTuple):
    """One target of a clip: visible masks (L, H, W) bool, amodal ones if known, its class for the
    shape model (0: unknown)."""

    visible: np.ndarray
    amodal: np.ndarray | None = None
    label: int = 0


def inpaint_clip(run: VoinRun, frames: np.ndarray, targets: Sequence[ObjectMasks]) -> tuple[np.ndarray,
                                                                                          list[Inpainted]]:
    """Every target inpainted in turn on ``frames`` (L, H, W, 3) uint8: the final frames and each
    target's :class:`Inpainted`."""
    amodal = [amodal_masks(run, t.visible, t.amodal, t.label) for t in targets]
    flows = None
    if run.settings.propagate and len(frames) > 1 and any((a & ~t.visible).any() for a, t in zip(amodal, targets)):
        flows = initial_flows(frames)  # once, on the input frames
    results = []
    for target, a in zip(targets, amodal):
        results.append(inpaint_object(run, frames, target.visible, a, flows))
        frames = results[-1].frames
    return frames, results


def sliding_windows(items: Iterable[T], window: int, overlap: int) -> Iterator[tuple[deque[T], int, int]]:
    """Lazily cut ``items`` into windows: yields ``(buffer, start, stop)`` where ``buffer[start:stop]``
    are the next ``window`` centre items (fewer at the end) and the rest of ``buffer`` up to ``overlap``
    items of context on each side. ``buffer`` is the live read buffer (valid until the next step:
    keep no reference to it), so at most ``window + 2 overlap`` items are held."""
    if window < 1 or overlap < 0:
        raise InputError(f"need window >= 1 and overlap >= 0, got {window} and {overlap}")
    source, buffer = iter(items), deque()
    first = centre = 0  # item indices of buffer[0] and of the next centre item
    exhausted = False
    while True:
        while not exhausted and first + len(buffer) < centre + window + overlap:
            try:
                buffer.append(next(source))
            except StopIteration:
                exhausted = True
        end = first + len(buffer)
        if centre >= end:
            return
        stop = min(centre + window, end)
        yield buffer, centre - first, stop - first
        centre = stop
        while first < centre - overlap:
            buffer.popleft()
            first += 1


class FrameMasks(NamedTuple):
    """One frame of a video and its masks: instance-id maps (H, W) of the visible and, if given,
    amodal masks (0: background)."""

    frame: np.ndarray
    visible: np.ndarray
    amodal: np.ndarray | None = None


@dataclass
class InpaintStats:
    """What :func:`inpaint_video` did, counted on the frames it wrote: windows, and per object the
    hole pixels and how many of them propagation filled (the generator filled the rest)."""

    windows: int = 0
    frames: int = 0
    hole: dict[int, int] = field(default_factory=dict)
    propagated: dict[int, int] = field(default_factory=dict)


def _window_result(run: VoinRun, buffer: Sequence[FrameMasks], start: int, stop: int, objects: Sequence[int],
                   labels: Mapping[int, int], stats: InpaintStats) -> list[np.ndarray]:
    """The centre frames of one window, inpainted (copies: nothing of the window outlives the call)."""
    frames = np.stack([item.frame for item in buffer])
    ids = np.stack([item.visible for item in buffer])
    amodal_ids = None if buffer[0].amodal is None else np.stack([item.amodal for item in buffer])
    targets = [ObjectMasks(ids == k, None if amodal_ids is None else amodal_ids == k, labels.get(k, 0))
               for k in objects]
    out, results = inpaint_clip(run, frames, targets)
    for k, r in zip(objects, results):
        stats.hole[k] = stats.hole.get(k, 0) + int(r.hole[start:stop].sum())
        stats.propagated[k] = stats.propagated.get(k, 0) + int(r.propagated[start:stop].sum())
    stats.windows += 1
    stats.frames += stop - start
    return [f.copy() for f in out[start:stop]]


def inpaint_video(run: VoinRun, items: Iterable[FrameMasks], objects: Sequence[int], window: int = 16,
                  overlap: int | None = None, labels: Mapping[int, int] | None = None,
                  stats: InpaintStats | None = None) -> Iterator[np.ndarray]:
    """The inpainted frames of a video, in order, each once, read and produced window by window
    (module docstring). ``objects``: the ids to inpaint, in this order; ``overlap`` None: the
    generator's temporal receptive field; ``labels``: object id -> class for the shape model."""
    overlap = run.generator.temporal_receptive_field if overlap is None else overlap
    if window < 1 or overlap < 0:
        raise InputError(f"need window >= 1 and overlap >= 0, got {window} and {overlap}")
    if not objects:
        raise InputError("no objects to inpaint")
    stats = InpaintStats() if stats is None else stats

    def frames() -> Iterator[np.ndarray]:
        for buffer, start, stop in sliding_windows(items, window, overlap):
            yield from _window_result(run, buffer, start, stop, objects, labels or {}, stats)

    return frames()
