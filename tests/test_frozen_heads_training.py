"""Head training on cached ROIs through the engine's Trainer: the validation curve and plateau
check, the seed's ROI draw, checkpoint/resume, the NaN guard, a falling and seeded loss, and a
variant's check of its cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from instseg.engine import NonFiniteLossError
from instseg.experiments import frozen_heads as fh
from instseg.experiments.frozen_heads import training

CHANNELS = 16


@pytest.fixture(scope="module")
def caches(smoke_frozen: dict) -> tuple[fh.RoiCache, fh.RoiCache]:
    detector = smoke_frozen["detector"]
    return (fh.cache_roi_features(detector, smoke_frozen["train"], range(12), jitter_per_gt=2, seed=0),
            fh.cache_roi_features(detector, smoke_frozen["val"], range(6), jitter_per_gt=1, seed=0))


def test_validation_curve_and_plateau_check_are_recorded(caches) -> None:
    train, val = caches
    head = fh.train_head(fh.TABLE_3_3[0], train, iters=40, batch_rois=8, lr=1e-2, seed=0, channels=CHANNELS,
                         val_cache=val, val_rois=64)
    assert [i for i, _ in head.val_curve] == [2 * (k + 1) for k in range(fh.VAL_POINTS)]
    assert head.val_curve[-1][1] < head.val_curve[0][1]
    assert head.plateau.points >= 2 and isinstance(head.plateau.passed, bool)
    # the validation batches do not train: the same run without them ends in the same weights
    plain = fh.train_head(fh.TABLE_3_3[0], train, iters=40, batch_rois=8, lr=1e-2, seed=0, channels=CHANNELS)
    for (name, a), b in zip(head.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_seed_draws_the_jittered_rois(caches, monkeypatch: pytest.MonkeyPatch) -> None:
    train, _ = caches
    seen: dict[int, set] = {}
    original = fh.RoiBatches.__init__

    def spy(self, cache, pool, batch_rois, seed):
        seen[len(seen)] = set(pool.tolist())
        original(self, cache, pool, batch_rois, seed)

    monkeypatch.setattr(fh.RoiBatches, "__init__", spy)
    for seed in (0, 1):
        fh.train_head(fh.TABLE_3_3[0], train, 1, 4, 1e-3, seed, CHANNELS, jitter_draw=0.5)
    gt = set(torch.nonzero(train.is_gt).squeeze(1).tolist())
    assert gt <= seen[0] and gt <= seen[1] and seen[0] != seen[1]
    assert len(seen[0]) < len(train)


def test_a_checkpointed_head_run_resumes_exactly(caches, tmp_path: Path) -> None:
    train, _ = caches
    straight = fh.train_head(fh.TABLE_3_3[3], train, 8, 8, 1e-2, 0, CHANNELS)
    fh.train_head(fh.TABLE_3_3[3], train, 8, 8, 1e-2, 0, CHANNELS, out_dir=tmp_path)
    # a second call with resume finds the finished run at its last iteration and trains no more
    resumed = fh.train_head(fh.TABLE_3_3[3], train, 8, 8, 1e-2, 0, CHANNELS, out_dir=tmp_path, resume=True)
    final = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)["model"]
    for (name, a), b in zip(straight.state_dict().items(), final.values()):
        assert torch.equal(a, b), name
    assert resumed.loss_curve == []


def test_a_nan_loss_stops_head_training(caches, monkeypatch: pytest.MonkeyPatch) -> None:
    train, _ = caches

    def poisoned(head: nn.Module, batch):
        return {"loss_mask": torch.tensor(float("nan"), requires_grad=True)}

    monkeypatch.setattr(training, "roi_head_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match="loss_mask"):
        fh.train_head(fh.TABLE_3_3[0], train, 3, 4, 1e-3, 0, CHANNELS)


def test_training_reduces_the_loss_and_is_seeded(caches) -> None:
    cache, _ = caches
    variant = fh.TABLE_3_3[0]
    head = fh.train_head(variant, cache, iters=30, batch_rois=16, lr=1e-2, seed=0, channels=CHANNELS)
    curve = head.loss_curve
    assert len(curve) == 30 and sum(curve[-5:]) < sum(curve[:5]) and head.train_seconds > 0
    again = fh.train_head(variant, cache, iters=30, batch_rois=16, lr=1e-2, seed=0, channels=CHANNELS)
    other = fh.train_head(variant, cache, iters=30, batch_rois=16, lr=1e-2, seed=1, channels=CHANNELS)
    for (name, p), q, r in zip(head.state_dict().items(), again.state_dict().values(), other.state_dict().values()):
        assert torch.equal(p, q), name
    assert any(not torch.equal(p, r) for p, r in zip(head.state_dict().values(), other.state_dict().values()))


def test_variant_must_match_its_cache(caches, smoke_frozen: dict) -> None:
    cache, _ = caches
    amodal_cache = fh.cache_roi_features(smoke_frozen["detector"], smoke_frozen["train"], range(4), jitter_per_gt=1,
                                         seed=0, amodal=True)
    with pytest.raises(ValueError, match="amodal"):
        fh.train_head(fh.TABLE_3_5[0], cache, 1, 4, 1e-3, 0, CHANNELS)
    orcnn = fh.train_head(fh.TABLE_3_5[1], amodal_cache, 2, 4, 1e-3, 0, CHANNELS)
    assert set(orcnn(amodal_cache.batch([0])[0])) == {"mask"}  # the amodal mask; the others when asked
    assert set(orcnn(amodal_cache.batch([0])[0], return_maps=True)) == {"mask", "visible_mask", "invisible_mask"}
