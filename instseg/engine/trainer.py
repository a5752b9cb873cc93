"""Iteration-based trainer, resumable bit-exactly: one loop for detectors, mask heads on cached
ROI features, trackers and video models, so all get device placement, AMP, the NaN guard,
checkpoints, resume and DDP.

The default contract is torchvision's: batches of ``(images, targets)`` from a dataset, and in
train mode ``model(images, targets)`` returns a dict of named scalar loss terms; the trainer sums
them. Anything else plugs in as a ``loss_fn(model, batch) -> dict of loss terms`` and a
``batches(start_iteration) -> iterator of batches`` source. Everything a step depends on is
either in the checkpoint (weights, optimizer, GradScaler, every RNG state) or a pure function of
the iteration (learning rate, data order), so ``train(resume=True)`` continues exactly where the
last checkpoint left off.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from instseg.engine import distributed as dist_utils
from instseg.engine.checkpoint import atomic_save, atomic_write, load_checkpoint
from instseg.engine.config import RESUMABLE_CHANGES, TrainConfig
from instseg.engine.schedule import lr_at
from instseg.engine.seeding import InfiniteBatchSampler, derive_seed, rng_state, seed_everything, set_rng_state
from instseg.errors import InputError

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
Callback = Callable[[int, dict[str, float]], None]
LossFn = Callable[[nn.Module, Any], dict[str, Tensor]]
BatchSource = Callable[[int], Iterator[Any]]


def detection_loss(model: nn.Module, batch: tuple[Sequence[Tensor], Sequence[dict[str, Any]]]) -> dict[str, Tensor]:
    """torchvision's training contract: ``model(images, targets)`` returns the loss terms."""
    images, targets = batch
    return model(images, targets)


def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors anywhere inside lists, tuples and dicts moved to ``device``; other values kept."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


class NonFiniteLossError(RuntimeError):
    """A loss went NaN/inf. Raised before the optimizer step, so the weights in memory are those
    after the previous iteration and ``checkpoints/last.pt`` is the last good checkpoint."""

    def __init__(self, iteration: int, losses: dict[str, float]):
        self.iteration = iteration
        self.losses = losses
        terms = ", ".join(f"{name}={value}" for name, value in losses.items())
        super().__init__(f"non-finite loss at iteration {iteration}: {terms}; training stopped before "
                         "the optimizer step, the last checkpoint is kept")


def build_optimizer(params: Sequence[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW; the learning rate is set every step from :func:`lr_at`."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


class Trainer:
    """Trains ``model`` on ``dataset`` (or on ``batches``) for ``config.max_iters`` optimizer steps.

    ``batches(start)`` yields the batches of iterations ``start, start + 1, ...`` and must be a pure
    function of the iteration for an exact resume; ``loss_fn(model, batch)`` returns the loss terms
    (default :func:`detection_loss`). Without ``out_dir`` nothing is written (no checkpoints, no
    metrics log, no resume): an in-memory run, e.g. one of many small heads.

    Under torchrun (call :func:`~instseg.engine.distributed.init_distributed` first) the model is
    wrapped in DistributedDataParallel and each rank takes ``batch_size / world_size`` samples of
    every global batch; only rank 0 writes ``out_dir``. This matches a single-process run when
    every loss term is a mean over the batch's images and the model has no BatchNorm in train
    mode (BN would normalise with per-rank statistics; use SyncBatchNorm or frozen BN).
    ``callbacks(iteration, row)`` run after each step (and after its checkpoint, if any) with the
    metrics row of that step.
    ``run_settings``: what else the run depends on (model config, initialisation; JSON-like values),
    kept in each checkpoint; a resume under other settings is refused, as under another schedule.

    With ``config.ema_decay`` the trainer keeps torch's ``AveragedModel`` of the weights (buffers
    included), updated after every optimizer step and checkpointed with them. Why: at a constant
    learning rate the weights jitter around the plateau, and so does any validation loss measured
    on them, by as much as a plateau check's tolerance; the average does not. ``eval_model`` is the
    module to validate (the average, else the model itself); when training ends the model holds
    the averaged weights, which ``model_final.pt`` keeps (the raw ones stay in ``last.pt``).
    """

    def __init__(self, model: nn.Module, dataset: Dataset | None, config: TrainConfig, out_dir: str | PathLike | None,
                 collate_fn: Callable[[list[Any]], Any] | None = None, device: str | torch.device | None = None,
                 callbacks: Sequence[Callback] = (), loss_fn: LossFn = detection_loss,
                 batches: BatchSource | None = None, run_settings: Mapping[str, Any] | None = None):
        if (dataset is None) == (batches is None):
            raise ValueError("give a dataset (with its collate_fn) or a batch source, not both or neither")
        self.config = config
        self.run_settings = None if run_settings is None else dict(run_settings)
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.dataset = dataset
        self.collate_fn = collate_fn
        self.batches = batches
        self.loss_fn = loss_fn
        self.callbacks = list(callbacks)
        self.device = torch.device(device) if device is not None else dist_utils.default_device()
        if self.device.type == "cuda" and self.device.index is None:  # DDP needs the index
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.rank = dist_utils.rank()
        self.world_size = dist_utils.world_size()
        if config.batch_size % self.world_size:
            raise InputError(f"batch_size {config.batch_size} (global) is not divisible by the "
                             f"{self.world_size} processes", record="train config")
        self.model = model.to(self.device)
        self.ddp_model: nn.Module = self.model
        if self.world_size > 1:
            self.ddp_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.params, config)
        self.amp_dtype = _amp_dtype(config, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.ema = None
        if config.ema_decay:
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
            self.ema.requires_grad_(False)

    @property
    def eval_model(self) -> nn.Module:
        """What validation measures: the weight average when there is one."""
        return self.model if self.ema is None else self.ema.module

    @property
    def last_checkpoint(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / "checkpoints" / "last.pt"

    @property
    def final_weights(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / "checkpoints" / "model_final.pt"

    def _loader(self, start: int) -> Iterator[Any]:
        cfg = self.config
        sampler = InfiniteBatchSampler(len(self.dataset), cfg.batch_size, cfg.seed, start, self.rank,
                                       self.world_size)
        # An explicit generator keeps the loader from drawing on the global torch RNG.
        loader = DataLoader(self.dataset, batch_sampler=sampler, collate_fn=self.collate_fn,
                            num_workers=cfg.num_workers, pin_memory=self.device.type == "cuda",
                            generator=torch.Generator().manual_seed(derive_seed(cfg.seed, self.rank, start)))
        return iter(loader)

    def train(self, resume: bool = False, restart_changed: bool = False) -> dict[str, Any]:
        """Run to ``max_iters``; with ``resume`` continue from ``checkpoints/last.pt`` if it exists
        (else start from scratch). A checkpoint of another schedule or other settings is refused,
        or with ``restart_changed`` trained over anew (a pipeline's run whose inputs changed).
        Returns a summary (iterations, last losses, paths, seconds)."""
        cfg = self.config
        main = dist_utils.is_main_process()
        writes = main and self.out_dir is not None
        seed_everything(derive_seed(cfg.seed, self.rank), cfg.deterministic)
        if resume and self.out_dir is None:
            raise ValueError("an in-memory run (no out_dir) cannot resume")
        start = self._restore(restart_changed) if resume and self.last_checkpoint.exists() else 0
        if start > cfg.max_iters:
            raise InputError(f"checkpoint is at iteration {start}, past max_iters={cfg.max_iters}",
                             self.last_checkpoint)
        metrics = _MetricsCSV(self.out_dir / "metrics.csv", start) if writes else None
        batches = self._loader(start) if self.batches is None else self.batches(start)
        bar = tqdm(total=cfg.max_iters, initial=start, desc="train", dynamic_ncols=True,
                   disable=None if writes else True)  # None: off when stderr is not a TTY
        row: dict[str, float] = {}
        began = time.perf_counter()
        self.model.train()
        try:
            for iteration in range(start, cfg.max_iters):
                tic = time.perf_counter()
                row = self._step(iteration, next(batches))
                row["sec_per_iter"] = time.perf_counter() - tic
                if metrics:
                    metrics.append(row)
                done = iteration + 1
                if self.out_dir is not None and (done % cfg.checkpoint_every == 0 or done == cfg.max_iters):
                    if metrics:
                        metrics.sync()
                    self._save_checkpoint(done)
                bar.update(1)
                if iteration % cfg.log_every == 0 or done == cfg.max_iters:
                    self._log(bar, row)
                for callback in self.callbacks:
                    callback(iteration, row)
            if self.ema is not None:
                self.model.load_state_dict(self.ema.module.state_dict())
            if writes:
                atomic_save(self.model.state_dict(), self.final_weights)
            dist_utils.barrier()
        finally:
            bar.close()
            if metrics:
                metrics.close()
            del batches  # shuts down loader workers
        return {"iterations": cfg.max_iters, "start_iteration": start,
                "losses": {k: v for k, v in row.items() if k not in ("iteration", "lr", "sec_per_iter")},
                "seconds": time.perf_counter() - began,
                "checkpoint": None if self.out_dir is None else str(self.last_checkpoint),
                "model_final": None if self.out_dir is None else str(self.final_weights)}

    def _step(self, iteration: int, batch: Any) -> dict[str, float]:
        cfg = self.config
        batch = to_device(batch, self.device)
        lr = lr_at(iteration, cfg.lr, warmup_iters=cfg.warmup_iters, warmup_factor=cfg.warmup_factor,
                   steps=cfg.lr_steps, gamma=cfg.gamma)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            losses = self.loss_fn(self.ddp_model, batch)
        total = sum(losses.values())
        # One reduction and one host sync per step: logged values are global-batch means, and
        # every rank sees a NaN from any rank, so all stop together instead of hanging in backward.
        values = dist_utils.mean_over_ranks(torch.stack([total.detach().float(), *(v.detach().float() for v in
                                                                                      losses.values())])).tolist()
        named = dict(zip(["loss", *losses], values))
        if not math.isfinite(values[0]):
            bad = {k: v for k, v in named.items() if k != "loss" and not math.isfinite(v)} or {"loss": values[0]}
            raise NonFiniteLossError(iteration, bad)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return {"iteration": iteration, "lr": lr, **named}

    def _save_checkpoint(self, iteration: int) -> None:
        """Collective (RNG states are gathered from every rank); rank 0 writes."""
        rng = dist_utils.all_gather_object(rng_state())
        if not dist_utils.is_main_process():
            return
        state = {"format": CHECKPOINT_FORMAT, "iteration": iteration, "model": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                 "rng": rng, "config": self.config.to_dict(), "settings": self.run_settings}
        atomic_save(state if self.ema is None else state | {"ema": self.ema.state_dict()}, self.last_checkpoint)

    def _restore(self, restart_changed: bool = False) -> int:
        state = load_checkpoint(self.last_checkpoint)
        current = self.config.to_dict()
        # A key the checkpoint lacks was added later: the run was trained under its default.
        default = TrainConfig(max_iters=1).to_dict()
        changed = sorted(k for k in current if k not in RESUMABLE_CHANGES
                         and state["config"].get(k, default[k]) != current[k])
        problem, hint = None, ""
        if changed:
            problem = f"{changed} differ from the checkpoint's config ({ {k: state['config'].get(k) for k in changed} })"
        stored = state.get("settings")
        if problem is None and self.run_settings is not None and stored != self.run_settings:
            changed = sorted(k for k in self.run_settings if (stored or {}).get(k) != self.run_settings[k])
            problem = f"the run was trained with other settings ({changed or 'unrecorded'})"
            hint = "; remove the run directory to retrain it"
        if problem is not None:
            if restart_changed:
                logger.warning("%s: cannot resume (%s): training anew", self.last_checkpoint, problem)
                return 0
            raise InputError(f"cannot resume: {problem}{hint}", self.last_checkpoint)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        if len(state["rng"]) == self.world_size:
            set_rng_state(state["rng"][self.rank])
        else:
            warnings.warn(f"checkpoint was written by {len(state['rng'])} processes, resuming on "
                          f"{self.world_size}: RNG streams are reseeded, so the run is not bit-identical "
                          "to an uninterrupted one", stacklevel=3)
            seed_everything(derive_seed(self.config.seed, self.rank, state["iteration"]),
                            self.config.deterministic)
        logger.info("resumed from %s at iteration %d", self.last_checkpoint, state["iteration"])
        return state["iteration"]

    def _log(self, bar: tqdm, row: dict[str, float]) -> None:
        if not dist_utils.is_main_process():
            return
        losses = {k: f"{v:.4g}" for k, v in row.items() if k not in ("iteration", "sec_per_iter")}
        if bar.disable:
            logger.info("iter %d/%d %s %.3f s/it", row["iteration"], self.config.max_iters,
                        " ".join(f"{k}={v}" for k, v in losses.items()), row["sec_per_iter"])
        else:
            bar.set_postfix(losses)


def _amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None when AMP is off (always on CPU)."""
    if not config.amp:
        return None
    if device.type != "cuda":
        logger.warning("amp=true is ignored on %s (CUDA only)", device)
        return None
    if config.amp_dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, config.amp_dtype)


class _MetricsCSV:
    """``metrics.csv``: one row per iteration (``dvc plots`` x-axis: ``iteration``).

    Rows at or after the starting iteration are dropped first: they were logged after the
    checkpoint being resumed from and will be logged again, so none is ever duplicated.
    """

    def __init__(self, path: Path, start: int):
        self.path = path
        self.fields = self._truncate(start)
        self.file: IO[str] | None = None
        self.writer: csv.DictWriter | None = None

    def _truncate(self, start: int) -> list[str] | None:
        """Drop rows >= ``start``; return the existing header (None for a new file)."""
        if start == 0 or not self.path.exists():
            self.path.unlink(missing_ok=True)
            return None
        with self.path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        if not rows:
            return None
        text = io.StringIO()
        csv.writer(text).writerows([rows[0], *(r for r in rows[1:] if int(r[0]) < start)])
        atomic_write(self.path, lambda f: f.write(text.getvalue().encode("utf-8")))
        return rows[0]

    def append(self, row: dict[str, float]) -> None:
        if self.writer is None:
            if self.fields is not None and list(row) != self.fields:
                raise RuntimeError(f"{self.path}: this run logs columns {list(row)}, the file has {self.fields}")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = self.path.open("a", newline="", encoding="utf-8")
            self.writer = csv.DictWriter(self.file, list(row))
            if self.fields is None:
                self.writer.writeheader()
        self.writer.writerow(row)
        self.file.flush()

    def sync(self) -> None:
        """Make the rows durable before a checkpoint claims to cover them."""
        if self.file is not None:
            os.fsync(self.file.fileno())

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
