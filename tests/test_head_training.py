"""Head training on cached ROIs through the engine's Trainer: the validation curve and plateau
check, the seed's ROI draw, checkpoint/resume and the NaN guard."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from instseg.engine import NonFiniteLossError
from instseg.experiments import head_ablation as ha

CHANNELS = 16


@pytest.fixture(scope="module")
def caches(smoke_frozen: dict) -> tuple[ha.RoiCache, ha.RoiCache]:
    detector = smoke_frozen["detector"]
    return (ha.cache_roi_features(detector, smoke_frozen["train"], range(12), jitter_per_gt=2, seed=0),
            ha.cache_roi_features(detector, smoke_frozen["val"], range(6), jitter_per_gt=1, seed=0))


def test_validation_curve_and_plateau_check_are_recorded(caches) -> None:
    train, val = caches
    head = ha.train_head(ha.TABLE_3_3[0], train, iters=40, batch_rois=8, lr=1e-2, seed=0, channels=CHANNELS,
                         val_cache=val, val_rois=64)
    assert [i for i, _ in head.val_curve] == [2 * (k + 1) for k in range(ha.VAL_POINTS)]
    assert head.val_curve[-1][1] < head.val_curve[0][1]
    assert head.plateau.points >= 2 and isinstance(head.plateau.passed, bool)
    # the validation batches do not train: the same run without them ends in the same weights
    plain = ha.train_head(ha.TABLE_3_3[0], train, iters=40, batch_rois=8, lr=1e-2, seed=0, channels=CHANNELS)
    for (name, a), b in zip(head.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_seed_draws_the_jittered_rois(caches, monkeypatch: pytest.MonkeyPatch) -> None:
    train, _ = caches
    seen: dict[int, set] = {}
    original = ha.RoiBatches.__init__

    def spy(self, cache, pool, batch_rois, seed):
        seen[len(seen)] = set(pool.tolist())
        original(self, cache, pool, batch_rois, seed)

    monkeypatch.setattr(ha.RoiBatches, "__init__", spy)
    for seed in (0, 1):
        ha.train_head(ha.TABLE_3_3[0], train, 1, 4, 1e-3, seed, CHANNELS, jitter_draw=0.5)
    gt = set(torch.nonzero(train.is_gt).squeeze(1).tolist())
    assert gt <= seen[0] and gt <= seen[1] and seen[0] != seen[1]
    assert len(seen[0]) < len(train)


def test_a_checkpointed_head_run_resumes_exactly(caches, tmp_path: Path) -> None:
    train, _ = caches
    straight = ha.train_head(ha.TABLE_3_3[3], train, 8, 8, 1e-2, 0, CHANNELS)
    ha.train_head(ha.TABLE_3_3[3], train, 8, 8, 1e-2, 0, CHANNELS, out_dir=tmp_path)
    # a second call with resume finds the finished run at its last iteration and trains no more
    resumed = ha.train_head(ha.TABLE_3_3[3], train, 8, 8, 1e-2, 0, CHANNELS, out_dir=tmp_path, resume=True)
    final = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)["model"]
    for (name, a), b in zip(straight.state_dict().items(), final.values()):
        assert torch.equal(a, b), name
    assert resumed.loss_curve == []


def test_a_nan_loss_stops_head_training(caches, monkeypatch: pytest.MonkeyPatch) -> None:
    train, _ = caches

    def poisoned(head: nn.Module, batch):
        return {"loss_mask": torch.tensor(float("nan"), requires_grad=True)}

    monkeypatch.setattr(ha, "roi_head_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match="loss_mask"):
        ha.train_head(ha.TABLE_3_3[0], train, 3, 4, 1e-3, 0, CHANNELS)
