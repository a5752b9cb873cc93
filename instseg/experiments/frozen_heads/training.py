"""Training one mask head on a ROI cache with the engine's Trainer.

Why: the head is all that trains (the detector is frozen), so a run is the engine's loop over
seeded minibatches of cached ROIs: exact resume, the NaN guard and the validation-loss plateau
check come with it, and every variant trained with one seed sees the same ROIs in the same order.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from instseg.engine import InfiniteBatchSampler, TrainConfig, derive_seed
from instseg.engine.trainer import Trainer
from instseg.engine.validation import ValidationLoss
from instseg.experiments.frozen_heads.roi_cache import HEAD_BATCH, RoiCache
from instseg.experiments.frozen_heads.variants import HeadVariant, build_head

DECAY_AT = 0.6  # the head schedule's 10x learning-rate decay, as a fraction of the iterations
VAL_POINTS = 20  # validation-loss measurements per head run (the plateau check reads them)


def _schedule(iters: int, batch_rois: int, lr: float, seed: int, optimizer: str = "adamw") -> TrainConfig:
    """The engine's config for a head run: warmup over the first 10% (at most 100 iterations),
    one 10x decay at 60%, so the curve can flatten before the plateau check's last 20%."""
    decay = int(DECAY_AT * iters)
    return TrainConfig(max_iters=iters, optimizer=optimizer, lr=lr, batch_size=batch_rois,
                       warmup_iters=min(100, iters // 10), lr_steps=(decay,) if decay > 0 else (), seed=seed)


def validation_rois(cache: RoiCache, count: int) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """A fixed, evenly spread batch of at most ``count`` ROIs of ``cache`` (the same for every
    head trained on it), on which the validation loss is measured."""
    keep = torch.linspace(0, len(cache) - 1, min(count, len(cache))).round().long().unique()
    return cache.batch(keep)


def roi_head_loss(head: nn.Module, batch: tuple[Tensor, Tensor, dict[str, Tensor]]) -> dict[str, Tensor]:
    """The engine's loss function for a mask head on cached ROIs: its own loss beside it."""
    features, labels, targets = batch
    return head.loss(head(features, labels), targets)


class RoiBatches:
    """The engine's batch source over a ROI cache: iteration ``i`` gets ROIs ``pool[sampler(i)]``,
    a pure function of the seed and the iteration (exact resume, and every variant trained with a
    seed sees the same ROIs in the same order)."""

    def __init__(self, cache: RoiCache, pool: Tensor, batch_rois: int, seed: int) -> None:
        self.cache, self.pool = cache, pool
        self.sampler = InfiniteBatchSampler(len(pool), batch_rois, seed)

    def __call__(self, start: int) -> Iterator[tuple[Tensor, Tensor, dict[str, Tensor]]]:
        for iteration in itertools.count(start):
            yield self.cache.batch(self.pool[torch.as_tensor(self.sampler.global_batch(iteration))])


def train_head(variant: HeadVariant, cache: RoiCache, iters: int, batch_rois: int, lr: float, seed: int,
               channels: int, optimizer: str = "adamw", init: nn.Module | None = None,
               val_cache: RoiCache | None = None, val_rois: int = 512, jitter_draw: float = 1.0,
               out_dir: str | Path | None = None, resume: bool = False) -> nn.Module:
    """A fresh head (initialised from ``seed``, or a copy of ``init``'s weights: fine-tuning)
    trained by the engine's :class:`~instseg.engine.Trainer` on minibatches of ``cache``. The seed
    also draws which jittered ROIs the run trains on (every ground-truth box, and each jittered
    copy with probability ``jitter_draw``), so seeds vary the training sample as a rerun on new
    proposals would. With ``out_dir`` the run checkpoints there and can ``resume``.

    The returned head is in eval mode and carries ``loss_curve`` (total loss per iteration) and
    ``train_seconds``; with ``val_cache`` (ROIs of held-out images, built by the same rule), also
    ``val_curve`` (iteration, loss on a fixed batch of ``val_rois`` of them, ``VAL_POINTS``
    times, the last at the end) and ``plateau`` (:func:`~instseg.engine.plateau.plateau_check`).
    """
    if variant.amodal != cache.amodal or variant.occluder_rule != cache.occluder_rule:
        raise ValueError(f"variant {variant.name!r} needs a cache with occluder_rule={variant.occluder_rule!r}, "
                         f"amodal={variant.amodal}; got {cache.occluder_rule!r}, {cache.amodal}")
    config = _schedule(iters, batch_rois, lr, seed, optimizer)
    torch.manual_seed(derive_seed(seed, 0))
    head = build_head(variant, cache.features.shape[1], channels)
    if init is not None:
        head.load_state_dict(init.state_dict())
    draw = torch.rand(len(cache), generator=torch.Generator().manual_seed(derive_seed(seed, 2))) < jitter_draw
    pool = torch.nonzero(cache.is_gt | draw).squeeze(1)
    curve: list[float] = []
    callbacks: list[Callable[[int, dict[str, float]], None]] = [lambda it, row: curve.append(row["loss"])]
    validation = None
    if val_cache is not None:
        features, labels, targets = validation_rois(val_cache, val_rois)
        chunks = [(f, lab, {k: v[i:i + HEAD_BATCH] for k, v in targets.items()})
                  for i, f, lab in zip(range(0, len(features), HEAD_BATCH), features.split(HEAD_BATCH),
                                       labels.split(HEAD_BATCH))]
        validation = ValidationLoss(head, chunks, iters, points=VAL_POINTS, loss_fn=roi_head_loss)
        callbacks.append(validation)
    trainer = Trainer(head, None, config, out_dir, callbacks=callbacks, loss_fn=roi_head_loss,
                      batches=RoiBatches(cache, pool, batch_rois, derive_seed(seed, 1)), device="cpu")
    start = time.perf_counter()
    trainer.train(resume=resume)
    head.loss_curve = curve
    head.train_seconds = time.perf_counter() - start
    if validation is not None:
        head.val_curve = validation.curve()
        head.plateau = validation.check(phase_end=max(config.lr_steps) if config.lr_steps else None)
    return head.eval()
