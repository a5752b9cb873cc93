"""Retraining the instance level alone on a trained PCAN's frozen ROI features: the rows of Table
5.6 (fg/bg prototype numbers) and the occlusion-aware bilayer head, each beside the default
numbers retrained the same way (their controlled pair).

Why frozen features: every row then reads the very same enhanced ROI features, so a difference is
the prototypes and the head alone; and the features are pooled once per trained model, which is
what lets seven prototype settings x seeds fit the ``cpu`` budget (a full clip training each does
not). A ROI's prototypes are propagated from its track's own box in the previous frame (eq. 5.8),
as at test time along a tracklet.

The attention maps the head reads have no trainable part (masked EM on frozen features inside
and outside frozen coarse masks), so :func:`with_maps` computes them once per variant, for the
ROIs the schedule will draw and the fixed validation ROIs, and every step and validation point
reads them: the EM ran on every batch before, for the same numbers.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from instseg.engine import TrainConfig, derive_seed
from instseg.engine.trainer import Trainer
from instseg.errors import InputError
from instseg.video.layers.instance_attention import propagate
from instseg.video.models.trackers.base import config_from_dict
from instseg.video.pcan.cache import CachedVideo
from instseg.video.pcan.model import PCAN
from instseg.video.pcan.training import schedule
from instseg.video.tracking.embedding_training import FixedBatchValidation

REFINE_PREFIXES = ("refine_head.", "refine_input.")


@dataclass(frozen=True)
class RefineTraining:
    """params.yaml ``video.scales.<s>.pcan.refine``."""

    iters: int = 300
    rois_per_batch: int = 64
    lr: float = 2e-3
    decay_at: float = 0.7
    val_rois: int = 256
    ema_decay: float = 0.0  # > 0: validate and keep the weights' moving average (Trainer)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RefineTraining:
        return config_from_dict(cls, values, "pcan.refine")

    def engine_config(self, seed: int) -> TrainConfig:
        return replace(schedule(self.iters, self.lr, self.rois_per_batch, seed, self.decay_at), ema_decay=self.ema_decay)


@dataclass
class RoiSet:
    """Frozen ROI features of every ROI matched to a track: features [N, C, 14, 14] and coarse
    logits [N, 28, 28] (float16), BCNet's targets (bool), and ``previous`` [N]: the row of the same
    track's own box in the frame before (-1: none)."""

    features: Tensor
    logits: Tensor
    targets: dict[str, Tensor]
    previous: Tensor
    maps: Tensor | None = None  # [N, 2, 14, 14] under the prototype settings ``maps_of`` (with_maps)
    maps_of: tuple[Any, ...] | None = None
    mapped: Tensor | None = None  # [N] bool: the ROIs ``maps`` holds

    def __len__(self) -> int:
        return len(self.previous)


def prototype_settings(model: PCAN) -> tuple[Any, ...]:
    """What a ROI's attention maps depend on besides the ROI set: the prototype numbers, the EM
    iterations and eq. 5.8's momentum."""
    c = model.config
    return c.fg_prototypes, c.bg_prototypes, c.instance_em_iters, c.momentum


@torch.no_grad()
def frozen_rois(model: PCAN, videos: Sequence[CachedVideo]) -> RoiSet:
    """The ROI set of ``videos`` (training caches) under ``model``'s frame module, each frame
    enhanced by the memory before it as at test time."""
    model.eval()
    features, logits, previous = [], [], []
    targets: dict[str, list[Tensor]] = {}
    count = 0
    for video in videos:
        before: dict[int, int] = {}
        for frame, _, enhanced in model.stream(video.frames):
            rows = torch.nonzero(frame.roi_track_ids >= 0).flatten()
            tracks = frame.roi_track_ids[rows].tolist()
            if len(rows):
                features.append(model.pool(enhanced, [frame.rois[rows]], frame.feature_size, video.size).half())
                logits.append(frame.roi_logits[rows])
                for k, v in frame.targets.items():
                    targets.setdefault(k, []).append(v[rows])
            previous += [before.get(int(k), -1) for k in tracks]
            position = {int(r): count + j for j, r in enumerate(rows.tolist())}
            before = {int(k): position[r] for k, r in frame.truth_rois.items() if r in position}
            count += len(rows)
    return RoiSet(torch.cat(features), torch.cat(logits), {k: torch.cat(v) for k, v in targets.items()},
                  torch.tensor(previous, dtype=torch.int64))


@torch.no_grad()
def roi_maps(model: PCAN, rois: RoiSet, index: Tensor) -> Tensor:
    """[len(index), 2, 14, 14]: the attention maps of ROIs ``index`` onto their prototypes, those of
    a ROI with a box one frame before propagated from that box's (eq. 5.8)."""
    features, logits = rois.features[index].float(), rois.logits[index].float()
    before = rois.previous[index]
    has = torch.nonzero(before >= 0).flatten()
    fresh = torch.nonzero(before < 0).flatten()
    fg = features.new_zeros(len(index), model.config.fg_prototypes, features.shape[1])
    bg = features.new_zeros(len(index), model.config.bg_prototypes, features.shape[1])
    if len(has):
        prior = model.prototypes(rois.features[before[has]].float(), rois.logits[before[has]].float())
        current = model.prototypes(features[has], logits[has], init=prior)
        fg[has], bg[has] = (propagate(p, c, model.config.momentum) for p, c in zip(prior, current))
    if len(fresh):
        fg[fresh], bg[fresh] = model.prototypes(features[fresh], logits[fresh])
    return model.maps(features, (fg, bg))


def with_maps(model: PCAN, rois: RoiSet, index: Tensor | None = None, chunk: int = 128) -> RoiSet:
    """``rois`` holding the attention maps of ROIs ``index`` (default: all) under ``model``'s
    prototype settings (module docstring), computed ``chunk`` ROIs at a time: a training batch's
    size, at which the EM ran 1.6x faster on one thread than 1,024 at a time."""
    if chunk < 1:
        raise InputError(f"chunk must be >= 1, got {chunk}")
    index = torch.arange(len(rois)) if index is None else torch.unique(index)
    maps = torch.zeros(len(rois), 2, *rois.features.shape[2:])
    for part in index.split(chunk):
        maps[part] = roi_maps(model, rois, part)
    mapped = torch.zeros(len(rois), dtype=torch.bool)
    mapped[index] = True
    return replace(rois, maps=maps, maps_of=prototype_settings(model), mapped=mapped)


def refine_loss(model: PCAN, batch: tuple[RoiSet, Tensor]) -> dict[str, Tensor]:
    """The engine's ``loss_fn``: the refine head's terms on ROIs ``batch[1]`` of a set
    :func:`with_maps` prepared for this model's prototype settings."""
    rois, index = batch
    if rois.maps is None or rois.mapped is None or rois.maps_of != prototype_settings(model):
        raise InputError(f"the ROI set holds maps for prototype settings {rois.maps_of}, the model needs "
                         f"{prototype_settings(model)} (fg, bg, EM iterations, momentum): prepare it with with_maps")
    if not rois.mapped[index].all():
        missing = index[~rois.mapped[index]]
        raise InputError(f"{len(missing)} ROIs of the batch have no maps (first: {int(missing[0])}): pass them "
                         "to with_maps")
    outputs = model.refine(rois.features[index].float(), rois.maps[index], rois.logits[index].float())
    return model.refine_loss(outputs, {k: v[index].float() for k, v in rois.targets.items()})


class RoiBatches:
    """Random ROI batches of a set, a pure function of (seed, iteration) for an exact resume."""

    def __init__(self, rois: RoiSet, per_batch: int, seed: int) -> None:
        self.rois, self.per_batch, self.seed = rois, per_batch, seed

    def batch(self, iteration: int) -> tuple[RoiSet, Tensor]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, iteration))
        return self.rois, torch.randint(len(self.rois), (self.per_batch,), generator=generator)

    def drawn(self, iterations: int) -> Tensor:
        """The distinct ROIs that iterations 0 .. ``iterations`` - 1 draw, sorted."""
        return torch.unique(torch.cat([self.batch(i)[1] for i in range(iterations)]))

    def __call__(self, start: int) -> Iterator[tuple[RoiSet, Tensor]]:
        for iteration in itertools.count(start):
            yield self.batch(iteration)


def refine_variant(model: PCAN, seed: int, **changes: Any) -> PCAN:
    """A copy of ``model`` with config ``changes`` (prototype numbers, refine head), sharing its
    trained frame module and embedding head (frozen) and a fresh refine head (the only trainable part)."""
    torch.manual_seed(derive_seed(seed, 0x5EF))
    variant = PCAN(replace(model.config, **changes), model.channels)
    shared = {k: v for k, v in model.state_dict().items() if not k.startswith(REFINE_PREFIXES)}
    variant.load_state_dict(shared, strict=False)
    for name, parameter in variant.named_parameters():
        parameter.requires_grad_(name.startswith(REFINE_PREFIXES))
    return variant


@dataclass
class RefineRun:
    model: PCAN
    seconds: float
    plateau: Any
    final_loss: dict[str, float]


def train_refine(variant: PCAN, training: RefineTraining, train: RoiSet, val: RoiSet, seed: int,
                 out_dir: str | Path | None = None, resume: bool = False, settings: dict[str, Any] | None = None
                 ) -> RefineRun:
    """The refine head of ``variant`` trained on ``train`` (its validation loss on fixed ROIs of ``val``).
    ``settings``: what the run was trained on top of (the base model's digest, the variant); a run
    found under other settings, or another schedule, is trained anew."""
    engine = training.engine_config(seed)
    start = time.perf_counter()
    fixed = torch.randperm(len(val), generator=torch.Generator().manual_seed(0))[:training.val_rois]
    drawn = RoiBatches(train, training.rois_per_batch, seed).drawn(training.iters)
    train, val = with_maps(variant, train, drawn), with_maps(variant, val, fixed)
    val_path = None if out_dir is None else Path(out_dir) / "val_loss.csv"
    batches = [(val, chunk) for chunk in fixed.split(training.rois_per_batch)]
    trainer = Trainer(variant, None, engine, out_dir, loss_fn=refine_loss,
                      batches=RoiBatches(train, training.rois_per_batch, seed), run_settings=settings)
    validation = FixedBatchValidation(trainer.eval_model, batches, training.iters, val_path, loss_fn=refine_loss)
    trainer.callbacks.append(validation)
    summary = trainer.train(resume=resume, restart_changed=True)
    variant.eval()
    return RefineRun(variant, time.perf_counter() - start,
                     validation.check(phase_end=max(engine.lr_steps, default=None)),
                     {k: float(v) for k, v in summary["losses"].items()})
