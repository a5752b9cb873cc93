"""VOIN's adversarial training step and loop: a generator, T-PatchGAN and the multi-class
discriminator, two Adam optimizers (section 5.4.3).

The engine's :class:`~instseg.engine.trainer.Trainer` steps one optimizer on one summed loss, and
a GAN needs two alternating steps on two losses, so this is a small loop of its own built from the
engine's pieces: the learning rate is ``engine.schedule.lr_at`` of the iteration (linear warmup,
one decay, so the plateau check reads both phases), checkpoints are ``engine.checkpoint``'s
atomic files holding every weight, both optimizers and every RNG state (``engine.seeding``), a
resume under other settings is refused, and a non-finite loss raises the engine's
:class:`~instseg.engine.trainer.NonFiniteLossError` naming the iteration and the term before the
optimizer that would read it steps. Batches are the caller's pure function of the iteration, so a
resumed run equals an uninterrupted one.

One step (STTN's order): the generator fills the clip; the discriminators step on the real clip
against the *detached* inpainted one (no gradient reaches the generator); then the generator steps
on its L1 and adversarial terms with the discriminators' parameters frozen (no gradient gathers in
them). Optimizers: Adam with betas (0.5, 0.999) for both networks, LGTSM's and FFVI's setting
(STTN's own is (0, 0.99)); no weight decay; one learning rate for both.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from instseg.engine.checkpoint import atomic_save, load_checkpoint
from instseg.engine.schedule import lr_at
from instseg.engine.seeding import derive_seed, rng_state, seed_everything, set_rng_state
from instseg.engine.trainer import NonFiniteLossError, to_device
from instseg.errors import InputError
from instseg.video.voin.discriminators import MultiClassDiscriminator, TPatchGAN
from instseg.video.voin.inpaint_data import CropSettings
from instseg.video.voin.generator import GeneratorConfig, OcclusionAwareGenerator
from instseg.video.voin.losses import LossWeights, discriminator_loss, generator_loss
from instseg.video.voin.params import voin_config

CHECKPOINT_FORMAT = 1
Batch = Mapping[str, Tensor]
Callback = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class InpaintRow:
    """One trained row of Table 5.8: the generator, whether it reads the flow-propagated frames
    (the table's "Use flow?"; the row's flag, so a foreign generator reads it too), which
    discriminators train it and the loss weights."""

    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    use_propagated: bool = True
    tpatch: bool = True
    multiclass: bool = True
    stam: bool = True  # the multi-class discriminator's attention module
    weights: LossWeights = field(default_factory=LossWeights)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> InpaintRow:
        values = dict(values)
        nested = {"generator": GeneratorConfig.from_dict, "weights": LossWeights.from_dict}
        for key, build in nested.items():
            if key in values and not isinstance(values[key], (GeneratorConfig, LossWeights)):
                values[key] = build(values[key])
        return voin_config(cls, values, "voin.inpaint.row")

    def check(self) -> None:
        if self.generator.use_propagated:
            raise InputError("set use_propagated on the row, not in its generator config", record="voin.inpaint.row")
        if self.stam and not self.multiclass:
            raise InputError("stam is part of the multi-class discriminator: set stam false without it",
                             record="voin.inpaint.row")

    def generator_config(self) -> GeneratorConfig:
        return replace(self.generator, use_propagated=self.use_propagated)

    def to_dict(self) -> dict[str, Any]:
        """JSON-like (lists, not tuples): a checkpoint's settings."""
        return _plain(asdict(self))


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


@dataclass(frozen=True)
class InpaintTraining:
    """One training's settings (params.yaml ``voin.inpaint.training``; defaults: the cpu scale):
    schedule, optimizer, discriminator widths, and the data side (crops, clips, validation).

    The cpu defaults fit ~2 minutes on one thread (0.11 s a step for the ``voin`` row with an
    8-channel generator, on a shared 2-core machine) and do NOT pass the plateau check: the hole
    L1 still fell 4.8% over the last 20% (1.8% over the tail before the decay) at 1,000 steps,
    and 2.7% (12%) at 2,000. They are what learns most in that time: 32 px crops beat 48 px ones
    at equal time (hole PSNR 14.9 against 14.1 dB; cv2 TELEA 14.1)."""

    iters: int = 1000
    lr: float = 6e-3
    betas: tuple[float, float] = (0.5, 0.999)
    warmup: float = 0.1  # fraction of iters, linear from lr / 1000
    decay_at: float = 0.6  # fraction of iters: one decay by gamma (0 or 1: none)
    gamma: float = 0.1
    grad_clip: float | None = None  # max gradient norm of each network
    tpatch_channels: tuple[int, ...] = (8, 16, 32, 32, 32, 32)
    multiclass_channels: tuple[int, ...] = (8, 16, 32, 32, 32)
    checkpoint_every: int = 250
    batch_size: int = 4  # clips per iteration
    clip_frames: int = 5  # a random temporal window of each training clip
    crop_size: int = 32
    context: float = 0.1
    augment: bool = True  # random flips, transpose and time reversal
    val_clips: int = 16
    val_points: int = 20

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> InpaintTraining:
        return voin_config(cls, values, "voin.inpaint.training")

    def check(self) -> None:
        ok = (min(self.iters, self.checkpoint_every, self.batch_size, self.val_clips, self.val_points) >= 1
              and self.clip_frames >= 1 and self.lr > 0 and len(self.betas) == 2 and 0 <= self.warmup < 1
              and 0 <= self.decay_at <= 1 and self.gamma > 0 and (self.grad_clip is None or self.grad_clip > 0)
              and len(self.tpatch_channels) >= 1 and len(self.multiclass_channels) >= 4)
        if not ok:
            raise InputError("need iters, checkpoint_every, batch_size, clip_frames, val_clips, val_points >= 1, "
                             "lr, gamma > 0, two betas, warmup in [0, 1), decay_at in [0, 1], grad_clip > 0 or "
                             "null, >= 4 multi-class widths", record="voin.inpaint.training")
        self.crop.check()

    @property
    def crop(self) -> CropSettings:
        return CropSettings(self.crop_size, self.context)

    @property
    def warmup_iters(self) -> int:
        return int(self.warmup * self.iters)

    @property
    def decay_iter(self) -> int | None:
        """The iteration of the one learning-rate decay (the plateau check's ``phase_end``), or None."""
        step = int(self.decay_at * self.iters)
        return step if 0 < step < self.iters else None


def learning_rate(setup: InpaintTraining, iteration: int) -> float:
    """The rate of step ``iteration`` (both networks)."""
    return lr_at(iteration, setup.lr, warmup_iters=setup.warmup_iters, warmup_factor=1e-3,
                 steps=() if setup.decay_iter is None else (setup.decay_iter,), gamma=setup.gamma)


class GanModels(nn.Module):
    """The generator and the discriminators a row trains with (None where it has none)."""

    def __init__(self, generator: nn.Module, tpatch: TPatchGAN | None, multiclass: MultiClassDiscriminator | None
                 ) -> None:
        super().__init__()
        self.generator, self.tpatch, self.multiclass = generator, tpatch, multiclass

    def discriminators(self) -> list[nn.Module]:
        return [d for d in (self.tpatch, self.multiclass) if d is not None]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return [p for d in self.discriminators() for p in d.parameters()]


GeneratorFactory = Callable[[InpaintRow], nn.Module]


def voin_generator(row: InpaintRow) -> nn.Module:
    """The default factory: VOIN's occlusion-aware generator under the row's config."""
    return OcclusionAwareGenerator(row.generator_config())


def build_models(row: InpaintRow, setup: InpaintTraining, num_classes: int, seed: int,
                 generator: GeneratorFactory = voin_generator) -> GanModels:
    """Fresh networks, each initialised from its own stream of ``seed``. ``generator(row)`` builds
    any module with the generator's signature ``(frames, visible, occluded, amodal, propagated=None)
    -> {"raw", "inpainted"}``."""
    row.check()
    torch.manual_seed(derive_seed(seed, 0x6E17))
    g = generator(row)
    torch.manual_seed(derive_seed(seed, 0xD7))
    dt = TPatchGAN(channels=setup.tpatch_channels) if row.tpatch else None
    torch.manual_seed(derive_seed(seed, 0xDC))
    dm = MultiClassDiscriminator(num_classes, channels=setup.multiclass_channels, stam=row.stam) \
        if row.multiclass else None
    return GanModels(g, dt, dm)


def generate(models: GanModels, batch: Batch, use_propagated: bool) -> dict[str, Tensor]:
    """The generator's output on a batch dict (``inpaint_data.clip_tensors`` keys, stacked)."""
    return models.generator(batch["frames"], batch["visible"], batch["occluded"], batch["amodal"],
                            batch["propagated"] if use_propagated else None)


def discriminator_terms(models: GanModels, batch: Batch, fake: Tensor, weights: LossWeights) -> dict[str, Tensor]:
    """The discriminators' loss on the real clip (``target``) against ``fake`` (pass it detached)."""
    real, hole, amodal = batch["target"], batch["occluded"], batch["amodal"]
    dt, dm = models.tpatch, models.multiclass
    return discriminator_loss(dt(real, hole) if dt else None, dt(fake, hole) if dt else None,
                              dm(real, amodal)["logits"] if dm else None, dm(fake, amodal)["logits"] if dm else None,
                              batch["labels"], weights)


def generator_terms(models: GanModels, batch: Batch, out: Mapping[str, Tensor], weights: LossWeights
                    ) -> dict[str, Tensor]:
    """The generator's loss: L1 of its raw clip, adversarial terms of the inpainted one."""
    fake, hole, amodal = out["inpainted"], batch["occluded"], batch["amodal"]
    dt, dm = models.tpatch, models.multiclass
    return generator_loss(out["raw"], batch["target"], hole, dt(fake, hole) if dt else None,
                          dm(fake, amodal)["logits"] if dm else None, batch["labels"], weights)


def _values(terms: Mapping[str, Tensor], prefix: str, iteration: int) -> dict[str, float]:
    """Terms as floats named ``prefix + name``; NonFiniteLossError naming the bad ones."""
    values = {prefix + k: float(v.detach()) for k, v in terms.items()}
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        raise NonFiniteLossError(iteration, bad)
    return values


def _step(optimizer: torch.optim.Optimizer, loss: Tensor, params: Sequence[nn.Parameter],
          clip: float | None) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()


def gan_step(models: GanModels, optimizers: Mapping[str, torch.optim.Optimizer], batch: Batch, row: InpaintRow,
             iteration: int, grad_clip: float | None = None) -> dict[str, float]:
    """One iteration (module docstring): the discriminators' step, then the generator's. Returns
    every term (``d_*``, ``g_*``)."""
    out = generate(models, batch, row.use_propagated)
    row_values: dict[str, float] = {}
    d_params = models.discriminator_parameters()
    if d_params:
        d_terms = discriminator_terms(models, batch, out["inpainted"].detach(), row.weights)
        row_values |= _values(d_terms, "d_", iteration)
        _step(optimizers["discriminators"], d_terms["total"], d_params, grad_clip)
    for p in d_params:
        p.requires_grad_(False)
    try:
        g_terms = generator_terms(models, batch, out, row.weights)
        row_values |= _values(g_terms, "g_", iteration)
        g_params = list(models.generator.parameters())
        _step(optimizers["generator"], g_terms["total"], g_params, grad_clip)
    finally:
        for p in d_params:
            p.requires_grad_(True)
    return row_values


def build_optimizers(models: GanModels, setup: InpaintTraining) -> dict[str, torch.optim.Optimizer]:
    opts = {"generator": torch.optim.Adam(models.generator.parameters(), lr=setup.lr, betas=setup.betas)}
    if models.discriminator_parameters():
        opts["discriminators"] = torch.optim.Adam(models.discriminator_parameters(), lr=setup.lr,
                                                  betas=setup.betas)
    return opts


@dataclass
class GanSummary:
    iterations: int
    start_iteration: int
    losses: dict[str, float]  # the last iteration's terms
    seconds: float  # wall time of this call (steps, callbacks, checkpoints)
    step_seconds: float  # the steps alone
    history: list[dict[str, float]]  # every iteration run by this call


def train_gan(models: GanModels, row: InpaintRow, setup: InpaintTraining, batches: Callable[[int], Iterator[Batch]],
              seed: int, out_dir: str | Path | None = None, resume: bool = False,
              callbacks: Sequence[Callback] = (), settings: Mapping[str, Any] | None = None,
              device: str | torch.device | None = None) -> GanSummary:
    """Train ``models`` for ``setup.iters`` iterations on ``batches(start)`` (iterations start,
    start + 1, ...). With ``out_dir``: ``checkpoints/last.pt`` every ``checkpoint_every`` iterations
    and at the end, the generator's weights in ``checkpoints/generator_final.pt``, and ``resume``
    continues from the last checkpoint if there is one (refused under other ``settings``)."""
    setup.check()
    if resume and out_dir is None:
        raise ValueError("an in-memory run (no out_dir) cannot resume")
    device = torch.device(device) if device is not None else next(models.parameters()).device
    models.to(device)
    optimizers = build_optimizers(models, setup)
    settings = _plain(dict(settings or {}) | {"row": row.to_dict(), "training": asdict(setup), "seed": seed})
    last = None if out_dir is None else Path(out_dir) / "checkpoints" / "last.pt"
    seed_everything(derive_seed(seed, 0x6A7))
    start = _restore(last, models, optimizers, settings) if resume and last.exists() else 0
    if start > setup.iters:
        raise InputError(f"checkpoint is at iteration {start}, past iters={setup.iters}", last)
    stream = batches(start)
    history: list[dict[str, float]] = []
    began, stepping = time.perf_counter(), 0.0
    models.train()
    for iteration in range(start, setup.iters):
        lr = learning_rate(setup, iteration)
        for opt in optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr
        batch = to_device(next(stream), device)
        tic = time.perf_counter()
        values = {"iteration": iteration, "lr": lr} | gan_step(models, optimizers, batch, row, iteration,
                                                               setup.grad_clip)
        stepping += time.perf_counter() - tic
        history.append(values)
        for callback in callbacks:  # before the checkpoint: a resume replays what a crash cut short
            callback(iteration, values)
        done = iteration + 1
        if last is not None and (done % setup.checkpoint_every == 0 or done == setup.iters):
            atomic_save({"format": CHECKPOINT_FORMAT, "iteration": done, "models": models.state_dict(),
                         "optimizers": {k: o.state_dict() for k, o in optimizers.items()}, "rng": rng_state(),
                         "settings": settings}, last)
    if last is not None:
        atomic_save(models.generator.state_dict(), last.parent / "generator_final.pt")
    return GanSummary(setup.iters, start, {k: v for k, v in (history[-1] if history else {}).items()
                                              if k not in ("iteration", "lr")},
                      time.perf_counter() - began, stepping, history)


def _restore(path: Path, models: GanModels, optimizers: Mapping[str, torch.optim.Optimizer],
             settings: Mapping[str, Any]) -> int:
    state = load_checkpoint(path)
    if state.get("format") != CHECKPOINT_FORMAT or "models" not in state:
        raise InputError("not a VOIN inpainting checkpoint", path)
    if state.get("settings") != settings:
        stored = state.get("settings") or {}
        changed = sorted(k for k in set(settings) | set(stored) if stored.get(k) != settings.get(k))
        raise InputError(f"cannot resume: the run was trained with other settings ({changed}); remove the run "
                         "directory to retrain it", path)
    models.load_state_dict(state["models"])
    for name, opt in optimizers.items():
        opt.load_state_dict(state["optimizers"][name])
    set_rng_state(state["rng"])
    return int(state["iteration"])
