"""Embedding-head training pieces: one batched head call gives each pair exactly the loss of its
own call, pairs are a pure function of the seed and iteration, the fixed-batch validation loss is
the mean over its batches, and settings reject typos."""

from __future__ import annotations

import pytest
import torch

from instseg.errors import InputError
from instseg.video.models.trackers.embedding import QuasiDenseEmbedHead, quasi_dense_loss
from instseg.video.tracking.embedding_training import EmbeddingTraining, FixedBatchValidation, pair_loss


def _pair(generator: torch.Generator, n_key: int, n_ref: int) -> tuple:
    ids = torch.tensor([1, 2, 3, -1, -2, 1, 2, -1])
    return (torch.randn(n_key, 8, 7, 7, generator=generator), ids[:n_key],
            torch.randn(n_ref, 8, 7, 7, generator=generator), ids.flip(0)[:n_ref])


def test_batched_pair_loss_equals_the_mean_of_separate_calls() -> None:
    torch.manual_seed(0)
    head = QuasiDenseEmbedHead(8, conv_channels=8, fc_channels=16, embed_dim=8)
    g = torch.Generator().manual_seed(1)
    batch = [_pair(g, 5, 7), _pair(g, 8, 3), _pair(g, 2, 6)]
    got = pair_loss(head, batch)
    for name in ("loss_track", "loss_track_aux"):
        want = sum(quasi_dense_loss(head(k), head(r), ki, ri)[name] for k, ki, r, ri in batch) / len(batch)
        torch.testing.assert_close(got[name], want, rtol=1e-5, atol=1e-6)
    sum(got.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())


def test_fixed_batch_validation_is_the_mean_over_its_batches_in_train_mode_and_restores_the_mode() -> None:
    torch.manual_seed(0)
    head = QuasiDenseEmbedHead(8, conv_channels=8, fc_channels=16, embed_dim=8).eval()
    g = torch.Generator().manual_seed(1)
    batches = [[_pair(g, 5, 7), _pair(g, 8, 3)], [_pair(g, 2, 6)]]
    seen = []

    def loss(model: torch.nn.Module, batch: list) -> dict:
        seen.append(model.training)
        return pair_loss(model, batch)

    value = FixedBatchValidation(head, batches, max_iters=10, loss_fn=loss).measure()
    each = [float(sum(pair_loss(head, b).values())) for b in batches]
    assert value == pytest.approx(sum(each) / 2, rel=1e-6) and each[0] != pytest.approx(each[1])
    assert seen == [True, True] and not head.training


def test_embedding_settings_reject_unknown_keys_and_build_the_schedule() -> None:
    with pytest.raises(InputError, match="itres"):
        EmbeddingTraining.from_dict({"itres": 10})
    config = EmbeddingTraining.from_dict({"iters": 100, "lr": 0.01}).engine_config(seed=3)
    assert config.max_iters == 100 and config.lr_steps == (70,) and config.warmup_iters == 10 and config.seed == 3
