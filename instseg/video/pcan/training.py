"""Training PCAN on clips of cached frames through the engine's Trainer (resume, NaN guard, AMP,
DDP, the validation-loss plateau check), the detector frozen and outside the graph.

A step is a batch of clips: a key frame with its memory (the ``memory_length - 1`` frames before
it) and a reference frame within ``max_gap`` of it, with its own memory. Both frames are enhanced
by the frame module; their ROIs feed QDTrack's loss; each key ROI matched to a track is refined
from the prototypes of that track's box in the reference frame, propagated into the key frame by
eq. 5.8 (the key's EM starts from them), and its mask BCE (BCNet's four terms for the bilayer
head) trains the refine head, the prototypes' features and, through them, the frame module.
A track absent from the reference frame gets the key ROI's own prototypes, as a tracklet's first
frame does at test time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from instseg.engine import TrainConfig, derive_seed, weights_digest
from instseg.engine.plateau import PlateauCheck
from instseg.engine.trainer import Trainer
from instseg.errors import InputError
from instseg.video.layers.instance_attention import propagate
from instseg.video.models.trackers.base import config_from_dict
from instseg.video.models.trackers.embedding import quasi_dense_loss
from instseg.video.pcan.cache import CachedVideo
from instseg.video.pcan.model import PCAN, PCANConfig
from instseg.video.tracking.embedding_training import FixedBatchValidation, KeyReferenceBatches, fixed_keys

Clip = tuple[CachedVideo, int, int]  # video, key frame, reference frame


@dataclass(frozen=True)
class PCANTraining:
    """The schedule (params.yaml ``video.scales.<s>.pcan.training``)."""

    iters: int = 400
    clips_per_batch: int = 4
    max_gap: int = 3
    lr: float = 2e-3
    decay_at: float = 0.7  # the one 10x decay, as a fraction of iters
    val_clips: int = 32
    # Start the embedding head from notebook 04's trained QDTrack-style head of the same seed: PCAN
    # is that baseline plus both modules, and the head then needs no relearning from scratch.
    init_embedding: bool = False

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PCANTraining:
        return config_from_dict(cls, values, "pcan.training")

    def engine_config(self, seed: int) -> TrainConfig:
        return schedule(self.iters, self.lr, self.clips_per_batch, seed, self.decay_at)


def schedule(iters: int, lr: float, batch_size: int, seed: int, decay_at: float = 0.7) -> TrainConfig:
    """PCAN's engine config: AdamW, 10% warmup, one 10x decay at ``decay_at`` of the iterations (the
    plateau check reads both phases), gradients clipped at norm 10."""
    if not 0 < decay_at <= 1:
        raise InputError(f"decay_at must lie in (0, 1], got {decay_at}", record="pcan.training.decay_at")
    decay = int(decay_at * iters)
    return TrainConfig(max_iters=iters, optimizer="adamw", lr=lr, batch_size=batch_size,
                       warmup_iters=max(1, iters // 10), lr_steps=(decay,) if decay else (), seed=seed, grad_clip=10.0)


def key_frames(videos: Sequence[CachedVideo], memory_length: int = 1) -> list[tuple[int, int]]:
    """(video, frame) of every frame with a ROI matched to a track and a full memory before it."""
    return [(v, t) for v, video in enumerate(videos) for t, f in enumerate(video.frames)
            if t >= memory_length - 1 and bool((f.roi_track_ids >= 0).any())]


class ClipBatches(KeyReferenceBatches):
    """The engine's batch source: clips (video, key, reference) drawn as QDTrack draws pairs,
    reference frames with a full memory too (moved forward where needed)."""

    def __init__(self, videos: Sequence[CachedVideo], per_batch: int, max_gap: int, memory_length: int,
                 seed: int) -> None:
        super().__init__(key_frames(videos, memory_length), [len(v) for v in videos], per_batch, max_gap, seed)
        self.videos, self.first = videos, memory_length - 1

    def batch(self, iteration: int) -> list[Clip]:
        return [(self.videos[v], t, max(r, self.first) if max(r, self.first) != t else t + 1)
                for v, t, r in self.indices(iteration)]


def _take(entry: Any, index: Tensor) -> Any:
    """Rows ``index`` of a batched memory entry (a tensor, or tuples/dicts of them)."""
    if isinstance(entry, Tensor):
        return entry.index_select(0, index)
    if isinstance(entry, dict):
        return {k: _take(v, index) for k, v in entry.items()}
    return tuple(_take(v, index) for v in entry)


def _levels(frames: Sequence[tuple[CachedVideo, int]], device: torch.device) -> dict[str, Tensor]:
    names = frames[0][0].frames[0].levels
    return {name: torch.stack([video.frames[t].levels[name] for video, t in frames]).to(device).float()
            for name in names}


def enhanced_frames(model: PCAN, frames: Sequence[tuple[CachedVideo, int]], device: torch.device
                    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The maps of ``frames`` (each with a full memory before it), batched: (raw, enhanced, each
    with its own memory); every memory frame is encoded once."""
    span = model.config.memory_length - 1
    current = _levels(frames, device)
    if not span:
        return current, model.enhance(current, [])
    needed = sorted({(id(video), m) for video, t in frames for m in range(t - span, t)})
    row = {key: i for i, key in enumerate(needed)}
    videos = {id(video): video for video, _ in frames}
    batched = model.memory_entry(_levels([(videos[v], m) for v, m in needed], device))
    memory = [_take(batched, torch.tensor([row[(id(video), t - span + j)] for video, t in frames], device=device))
              for j in range(span)]
    return current, model.enhance(current, memory)


def clips_loss(model: PCAN, batch: Sequence[Clip]) -> dict[str, Tensor]:
    """The engine's ``loss_fn``: QDTrack's terms averaged over the clips, the refine head's over
    every matched key ROI of the batch (see the module docstring)."""
    device = next(model.parameters()).device
    video0 = batch[0][0]
    queries = [(v, t) for v, t, _ in batch] + [(v, r) for v, _, r in batch]
    frames = [video.frames[t] for video, t in queries]
    raw, enhanced = enhanced_frames(model, queries, device)
    boxes = [f.rois.to(device) for f in frames]
    rois = model.pool(enhanced, boxes, frames[0].feature_size, video0.size)
    counts = [len(f.rois) for f in frames]
    starts = [sum(counts[:i]) for i in range(len(counts))]
    embeds = model.embed(raw, rois, boxes, frames[0].feature_size, video0.size).split(counts)
    losses: dict[str, Tensor] = {}
    n = len(batch)
    for b in range(n):
        terms = quasi_dense_loss(embeds[b], embeds[n + b], frames[b].roi_track_ids.to(device),
                                 frames[n + b].roi_track_ids.to(device))
        for name, value in terms.items():
            losses[name] = losses.get(name, 0.0) + value / n
    paired, paired_ref, alone = [], [], []
    for b in range(n):
        key, ref = frames[b], frames[n + b]
        for i in torch.nonzero(key.roi_track_ids >= 0).flatten().tolist():
            row = ref.truth_rois.get(int(key.roi_track_ids[i]), -1)
            if row >= 0:
                paired.append(starts[b] + i)
                paired_ref.append(starts[n + b] + row)
            else:
                alone.append(starts[b] + i)
    logits = torch.cat([f.roi_logits for f in frames]).to(device)
    groups = []
    if paired:
        p, q = torch.tensor(paired, device=device), torch.tensor(paired_ref, device=device)
        previous = model.prototypes(rois[q], logits[q])
        current = model.prototypes(rois[p], logits[p], init=previous)
        groups.append(tuple(propagate(a, c, model.config.momentum) for a, c in zip(previous, current)))
    if alone:
        a = torch.tensor(alone, device=device)
        groups.append(model.prototypes(rois[a], logits[a]))
    order = torch.tensor(paired + alone, dtype=torch.int64, device=device)
    if groups:
        prototypes = tuple(torch.cat([g[i] for g in groups]) for i in range(2))
    else:
        prototypes = model.prototypes(rois[order], logits[order])
    outputs = model.refine(rois[order], model.maps(rois[order], prototypes), logits[order])
    targets = {k: torch.cat([f.targets[k] for f in frames]).to(device)[order].float() for k in frames[0].targets}
    return losses | model.refine_loss(outputs, targets)


@dataclass
class PCANRun:
    """A trained model and what its training measured."""

    model: PCAN
    seconds: float
    plateau: PlateauCheck
    val_curve: list[tuple[int, float]]
    final_loss: dict[str, float]


def train_pcan(config: PCANConfig, training: PCANTraining, train: Sequence[CachedVideo], val: Sequence[CachedVideo],
               seed: int, out_dir: str | Path | None = None, resume: bool = False,
               embed_init: nn.Module | None = None, inputs: dict[str, str] | None = None) -> PCANRun:
    """A fresh PCAN (initialised from ``seed``; its embedding head from ``embed_init``, a trained
    QDTrack-style head, where given) trained on clips of ``train``; its validation loss on fixed
    clips of ``val`` feeds the plateau check. With ``out_dir`` the run checkpoints there; a run
    found there under other settings (``inputs``: digests of what the clips come from; the start
    head's weights) is trained anew."""
    channels = int(next(iter(train[0].frames[0].levels.values())).shape[0])
    torch.manual_seed(derive_seed(seed, 0x9CA))
    model = PCAN(config, channels)
    if embed_init is not None:
        try:
            model.embed_head.load_state_dict(embed_init.state_dict())
        except RuntimeError as exc:
            raise InputError(f"the embedding head to start from does not fit PCAN's ({str(exc).splitlines()[0]})",
                             record="pcan.training.init_embedding") from None
    engine = training.engine_config(seed)
    first = config.memory_length - 1
    val_keys = fixed_keys(key_frames(val, config.memory_length), [len(v) for v in val], training.val_clips,
                          training.max_gap)
    val_batch = [(val[v], t, max(r, first) if max(r, first) != t else t + 1) for v, t, r in val_keys]
    val_path = None if out_dir is None else Path(out_dir) / "val_loss.csv"
    chunks = [val_batch[i:i + training.clips_per_batch] for i in range(0, len(val_batch), training.clips_per_batch)]
    validation = FixedBatchValidation(model, chunks, training.iters, val_path, loss_fn=clips_loss)
    start = time.perf_counter()
    settings = {"model": config.to_dict(), "training": asdict(training), "inputs": dict(inputs or {}),
                "embed_init": None if embed_init is None else weights_digest(embed_init.state_dict())}
    trainer = Trainer(model, None, engine, out_dir, loss_fn=clips_loss, callbacks=[validation], run_settings=settings,
                      batches=ClipBatches(train, training.clips_per_batch, training.max_gap, config.memory_length, seed))
    summary = trainer.train(resume=resume, restart_changed=True)
    model.eval()
    return PCANRun(model, time.perf_counter() - start, validation.check(phase_end=max(engine.lr_steps, default=None)),
                   validation.curve(), {k: float(v) for k, v in summary["losses"].items()})
