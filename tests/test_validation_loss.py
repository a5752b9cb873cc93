"""The training-time validation loss the detectors' plateau check reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from instseg.engine import TrainConfig, Trainer
from instseg.engine.validation import ValidationLoss, read_curve

from engine_toy import ToyDataset, collate, make_model

BASE = {"max_iters": 20, "batch_size": 4, "lr": 0.05, "warmup_iters": 0, "checkpoint_every": 5, "log_every": 100,
        "seed": 3}


def _run(out: Path, with_val: bool, max_iters: int = 20, resume: bool = False, crash_after: int | None = None):
    model = make_model(0, dropout=0.3)
    val = ValidationLoss.of_dataset(model, ToyDataset(n=8), collate, 20, out / "val_loss.csv", images=8, batch_size=4,
                                    points=4)

    def crash(iteration: int, row: dict) -> None:
        if iteration == crash_after:
            raise KeyboardInterrupt

    callbacks = ([val] if with_val else []) + [crash]
    trainer = Trainer(model, ToyDataset(augment=True), TrainConfig.from_dict({**BASE, "max_iters": max_iters}), out,
                      collate, callbacks=callbacks)
    trainer.train(resume=resume)
    return model, val


def test_measured_at_evenly_spaced_points_as_the_image_mean_of_the_summed_losses(tmp_path: Path) -> None:
    model, val = _run(tmp_path, True)
    curve = read_curve(tmp_path / "val_loss.csv")
    assert [i for i, _ in curve] == [5, 10, 15, 20]
    assert val.check().points >= 1
    model.eval()
    torch.manual_seed(0)  # the callback's seed: dropout draws the same masks
    model.train()
    images, targets = collate([ToyDataset(n=8)[i] for i in range(8)])
    with torch.no_grad():
        by_hand = (float(sum(model(images[:4], targets[:4]).values())) * 4
                   + float(sum(model(images[4:], targets[4:]).values())) * 4) / 8
    model.eval()
    assert val.measure() == pytest.approx(by_hand) and not model.training


def test_measuring_does_not_change_training(tmp_path: Path) -> None:
    """Dropout and augmentation draw on the global RNGs: the validation pass must not consume them."""
    with_val, _ = _run(tmp_path / "a", True)
    without, _ = _run(tmp_path / "b", False)
    for (name, a), b in zip(with_val.state_dict().items(), without.state_dict().values()):
        assert torch.equal(a, b), name


def test_resumed_curve_equals_the_uninterrupted_one(tmp_path: Path) -> None:
    _run(tmp_path / "straight", True)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "resumed", True, crash_after=12)  # checkpoint at 10, curve has 5, 10 (and not 15)
    _run(tmp_path / "resumed", True, resume=True)
    assert read_curve(tmp_path / "resumed/val_loss.csv") == read_curve(tmp_path / "straight/val_loss.csv")


def test_in_memory_curve_without_a_path() -> None:
    model = make_model(0)
    val = ValidationLoss.of_dataset(model, ToyDataset(n=8), collate, 4, images=8, batch_size=8, points=2)
    for iteration in range(4):
        val(iteration, {})
    assert [i for i, _ in val.curve()] == [2, 4] and val.curve()[0][1] == val.curve()[1][1]  # no training between
