"""Training QDTrack's embedding head on the frozen detector's cached ROI features, through the
engine's Trainer (exact resume, NaN guard, DDP, the validation-loss plateau check).

A step is a batch of key/reference frame pairs of one video each, the reference drawn within
``max_gap`` frames of the key (QDTrack: +-3); the loss is the quasi-dense contrastive loss plus
its auxiliary L2 term, averaged over the pairs. Which pairs iteration ``i`` sees is a pure
function of the seed and ``i``, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from instseg.engine import InfiniteBatchSampler, TrainConfig, derive_seed
from instseg.engine.plateau import PlateauCheck
from instseg.engine.trainer import Trainer
from instseg.engine.validation import ValidationLoss
from instseg.video.models.trackers.base import config_from_dict
from instseg.video.models.trackers.embedding import QuasiDenseEmbedHead, quasi_dense_loss
from instseg.video.tracking.detection_cache import VideoFrames

Pair = tuple[Tensor, Tensor, Tensor, Tensor]  # key features, key ids, reference features, reference ids


@dataclass(frozen=True)
class EmbeddingTraining:
    """The embedding head's size and its training schedule (params.yaml ``scales.<s>.tracking.embedding``)."""

    conv_channels: int = 32
    fc_channels: int = 256
    embed_dim: int = 128
    iters: int = 600
    pairs_per_batch: int = 8
    max_gap: int = 3
    lr: float = 1e-3
    val_pairs: int = 64

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EmbeddingTraining:
        return config_from_dict(cls, values, "tracking.embedding")

    def head_kwargs(self, in_channels: int) -> dict[str, int]:
        return {"in_channels": in_channels, "conv_channels": self.conv_channels, "fc_channels": self.fc_channels,
                "embed_dim": self.embed_dim}

    def engine_config(self, seed: int) -> TrainConfig:
        """AdamW with a 10% warmup and one 10x decay at 70%: the plateau check reads both phases."""
        decay = int(0.7 * self.iters)
        return TrainConfig(max_iters=self.iters, optimizer="adamw", lr=self.lr, batch_size=self.pairs_per_batch,
                           warmup_iters=min(100, self.iters // 10), lr_steps=(decay,) if decay else (), seed=seed)


def _frame_index(videos: Sequence[VideoFrames]) -> list[tuple[int, int]]:
    """(video, frame) of every training frame that has at least one ROI assigned to a track."""
    return [(v, t) for v, video in enumerate(videos) for t in range(len(video))
            if bool((video.roi_track_ids[t] >= 0).any())]


def reference_frame(length: int, t: int, max_gap: int, seed: int) -> int:
    """The reference frame of key frame ``t``: drawn from ``seed`` within ``max_gap`` frames of it."""
    offsets = [d for d in range(-max_gap, max_gap + 1) if d and 0 <= t + d < length]
    return t + offsets[np.random.default_rng(seed).integers(len(offsets))]


def _pair(videos: Sequence[VideoFrames], v: int, t: int, ref: int) -> Pair:
    video = videos[v]
    return (video.detections[t].roi_features, video.roi_track_ids[t],
            video.detections[ref].roi_features, video.roi_track_ids[ref])


class KeyReferenceBatches:
    """The engine's batch source of (video, key frame, reference frame) index triples: iteration
    ``i`` gets ``per_batch`` key frames (an epoch-wise permutation of ``keys``, as the image heads
    draw ROIs), each with a reference frame drawn from ``derive_seed(seed, i, k)``."""

    def __init__(self, keys: Sequence[tuple[int, int]], lengths: Sequence[int], per_batch: int, max_gap: int,
                 seed: int) -> None:
        if not keys:
            raise ValueError("no training frame has a ROI assigned to a track")
        self.keys, self.lengths, self.max_gap, self.seed = list(keys), list(lengths), max_gap, seed
        self.sampler = InfiniteBatchSampler(len(self.keys), per_batch, seed)

    def indices(self, iteration: int) -> list[tuple[int, int, int]]:
        out = []
        for n, k in enumerate(self.sampler.global_batch(iteration)):
            v, t = self.keys[k]
            out.append((v, t, reference_frame(self.lengths[v], t, self.max_gap, derive_seed(self.seed, iteration, n))))
        return out

    def batch(self, iteration: int) -> Any:
        return self.indices(iteration)

    def __call__(self, start: int) -> Iterator[Any]:
        for iteration in itertools.count(start):
            yield self.batch(iteration)


class PairBatches(KeyReferenceBatches):
    """Key/reference pairs of ROI features and ids (see :class:`KeyReferenceBatches`)."""

    def __init__(self, videos: Sequence[VideoFrames], pairs_per_batch: int, max_gap: int, seed: int) -> None:
        super().__init__(_frame_index(videos), [len(v) for v in videos], pairs_per_batch, max_gap, seed)
        self.videos = videos

    def batch(self, iteration: int) -> list[Pair]:
        return [_pair(self.videos, v, t, r) for v, t, r in self.indices(iteration)]


def fixed_keys(keys: Sequence[tuple[int, int]], lengths: Sequence[int], count: int, max_gap: int, seed: int = 0
               ) -> list[tuple[int, int, int]]:
    """``count`` (video, key, reference) triples spread evenly over ``keys``: a validation batch."""
    picks = np.unique(np.linspace(0, len(keys) - 1, min(count, len(keys))).round().astype(int))
    return [(keys[k][0], keys[k][1], reference_frame(lengths[keys[k][0]], keys[k][1], max_gap, derive_seed(seed, k)))
            for k in picks]


def fixed_pairs(videos: Sequence[VideoFrames], count: int, max_gap: int, seed: int = 0) -> list[Pair]:
    """``count`` key/reference pairs spread evenly over ``videos``: the validation batch."""
    triples = fixed_keys(_frame_index(videos), [len(v) for v in videos], count, max_gap, seed)
    return [_pair(videos, v, t, r) for v, t, r in triples]


def pair_loss(head: nn.Module, batch: Sequence[Pair]) -> dict[str, Tensor]:
    """The quasi-dense loss terms, averaged over the batch's pairs (the engine's ``loss_fn``). The
    head embeds every ROI of the batch in one call (GroupNorm: per ROI, so batching changes no
    value), then each pair's loss reads its own rows."""
    features = [f for key, _, ref, _ in batch for f in (key, ref)]
    embeds = head(torch.cat(features).float()).split([len(f) for f in features])
    totals: dict[str, Tensor] = {}
    for k, (_, key_ids, _, ref_ids) in enumerate(batch):
        losses = quasi_dense_loss(embeds[2 * k], embeds[2 * k + 1], key_ids, ref_ids)
        for name, value in losses.items():
            totals[name] = totals.get(name, 0.0) + value / len(batch)
    return totals


class FixedBatchValidation(ValidationLoss):
    """ValidationLoss over fixed batches (pairs, clips or ROIs), the mean of their losses, measured
    in train mode under a fixed seed.

    Why several batches of the training's size rather than one: on CPU a PCAN loss over 32 clips at
    once took 2.2x as long as over the same clips 4 at a time (a transposed convolution and the ROI
    sampling over a thousand ROIs fall out of cache), and validation was a third of a clip training."""

    @torch.no_grad()
    def measure(self) -> float:
        was_training = self.model.training
        self.model.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            values = [float(sum(self.loss_fn(self.model, batch).values())) for batch in self.batches]
        self.model.train(was_training)
        return sum(values) / len(values)


@dataclass
class EmbeddingRun:
    """A trained head and what its training measured."""

    head: QuasiDenseEmbedHead
    seconds: float
    plateau: PlateauCheck
    val_curve: list[tuple[int, float]]
    final_loss: dict[str, float]


def train_embedding(setup: EmbeddingTraining, train: Sequence[VideoFrames], val: Sequence[VideoFrames], seed: int,
                    out_dir: str | Path | None = None, resume: bool = False) -> EmbeddingRun:
    """A fresh embedding head (initialised from ``seed``) trained on key/reference pairs of
    ``train``, its validation loss measured on fixed pairs of ``val``. With ``out_dir`` the run
    checkpoints there (``checkpoints/model_final.pt``) and can ``resume``."""
    in_channels = int(train[0].detections[0].roi_features.shape[1])
    torch.manual_seed(derive_seed(seed, 0xE4B))
    head = QuasiDenseEmbedHead(**setup.head_kwargs(in_channels))
    config = setup.engine_config(seed)
    val_path = None if out_dir is None else Path(out_dir) / "val_loss.csv"
    validation = FixedBatchValidation(head, [fixed_pairs(val, setup.val_pairs, setup.max_gap)], setup.iters, val_path,
                                 loss_fn=pair_loss)
    start = time.perf_counter()
    summary = Trainer(head, None, config, out_dir, loss_fn=pair_loss, callbacks=[validation],
                      batches=PairBatches(train, setup.pairs_per_batch, setup.max_gap, seed)).train(resume=resume)
    head.eval()
    final = {k: float(v) for k, v in summary["losses"].items()}
    return EmbeddingRun(head, time.perf_counter() - start, validation.check(phase_end=max(config.lr_steps, default=None)),
                        validation.curve(), final)
