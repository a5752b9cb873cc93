"""Validation loss during training, for the plateau check (:mod:`instseg.engine.plateau`).

Why a loss and not AP: AP needs post-processing and a COCO evaluation per point; the summed
training losses on fixed held-out images track convergence at a fraction of the cost, and a
detector's loss terms are what its optimiser actually minimises.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from instseg.engine.checkpoint import atomic_write
from instseg.engine.distributed import is_main_process
from instseg.engine.plateau import PlateauCheck, plateau_check
from instseg.engine.trainer import LossFn, detection_loss, to_device


class ValidationLoss:
    """Trainer callback: every ``max_iters / points`` iterations (the last at the end), the model's
    summed loss terms (``loss_fn``, as the trainer computes them) on fixed held-out ``batches``,
    averaged over their samples, under a fixed RNG seed (proposal sampling is random) and with
    BatchNorm in eval mode (its statistics are not touched). With ``path`` the curve goes to a CSV
    (iteration, val_loss) whose rows at or after a resumed iteration are replaced, so a resumed
    run's curve equals an uninterrupted one's; without, it is kept in memory."""

    def __init__(self, model: nn.Module, batches: Sequence[Any], max_iters: int, path: str | Path | None = None,
                 points: int = 20, seed: int = 0, loss_fn: LossFn = detection_loss,
                 device: torch.device | str | None = None) -> None:
        self.model, self.batches, self.loss_fn, self.seed = model, list(batches), loss_fn, seed
        self.path = None if path is None else Path(path)
        self.measure_at = {round(max_iters * (k + 1) / points) for k in range(points)}
        self.device = device
        self._curve: list[tuple[int, float]] = []

    @classmethod
    def of_dataset(cls, model: nn.Module, dataset: Dataset, collate_fn: Callable[[list[Any]], Any], max_iters: int,
                   path: str | Path | None = None, images: int = 32, batch_size: int = 8, **kwargs: Any
                   ) -> ValidationLoss:
        """On the first ``images`` images of ``dataset``, ``batch_size`` at a time."""
        n = min(images, len(dataset))
        batches = [collate_fn([dataset[i] for i in range(s, min(s + batch_size, n))]) for s in range(0, n, batch_size)]
        return cls(model, batches, max_iters, path, **kwargs)

    @torch.no_grad()
    def measure(self) -> float:
        was_training = self.model.training
        self.model.train()
        for m in self.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        device = self.device or next(self.model.parameters()).device
        total, count = 0.0, 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            for batch in self.batches:
                size = len(batch[0])
                total += float(sum(self.loss_fn(self.model, to_device(batch, device)).values())) * size
                count += size
        self.model.train(was_training)
        return total / max(count, 1)

    def __call__(self, iteration: int, row: dict[str, float]) -> None:
        done = iteration + 1
        if done not in self.measure_at or not is_main_process():
            return
        rows = [r for r in self.curve() if r[0] < done] + [(done, self.measure())]
        if self.path is None:
            self._curve = rows
            return
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(["iteration", "val_loss"])
        writer.writerows(rows)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, lambda f: f.write(text.getvalue().encode("utf-8")))

    def curve(self) -> list[tuple[int, float]]:
        if self.path is None:
            return list(self._curve)
        return read_curve(self.path) if self.path.exists() else []

    def check(self, phase_end: int | None = None) -> PlateauCheck:
        """The plateau check of the curve; ``phase_end``: the schedule's last learning-rate decay."""
        curve = self.curve()
        return plateau_check([i for i, _ in curve], [v for _, v in curve], phase_end=phase_end) if curve else \
            plateau_check([0], [float("nan")])


def read_curve(path: str | Path) -> list[tuple[int, float]]:
    """A ``val_loss.csv`` written by :class:`ValidationLoss`."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        return [(int(r["iteration"]), float(r["val_loss"])) for r in csv.DictReader(f)]
