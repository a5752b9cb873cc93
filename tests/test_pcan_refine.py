"""The instance level retrained alone (Table 5.6's rows, the bilayer head) and the variants scored
in one linking pass, on the synthetic cache of test_pcan_model."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from instseg.engine.validation import read_curve
from instseg.errors import InputError
from instseg.video.models.trackers.quasi_dense import QuasiDenseConfig
from instseg.video.pcan.cache import CachedVideo
from instseg.video.pcan.experiment import PCANSetup
from instseg.video.pcan.model import PCAN, PCANConfig
from instseg.video.pcan.refine_training import (RefineTraining, RoiBatches, frozen_rois, refine_loss, refine_variant,
                                                roi_maps, train_refine, with_maps)
from instseg.video.pcan.tracking import track_pcan, track_pcan_variants
from instseg.video.tracking.embedding_training import FixedBatchValidation

from test_pcan_model import C, SMALL, video  # noqa: F401  (the fixture)


@pytest.fixture
def model() -> PCAN:
    torch.manual_seed(0)
    return PCAN(PCANConfig(memory_length=3, **SMALL), C).eval()


def test_roi_set_holds_matched_rois_and_links_each_to_its_tracks_box_one_frame_before(model: PCAN, video: CachedVideo) -> None:
    rois = frozen_rois(model, [video])
    matched = [f.roi_track_ids[f.roi_track_ids >= 0] for f in video.frames]
    assert len(rois) == sum(len(m) for m in matched) and rois.features.shape[1:] == (C, 14, 14)
    assert set(rois.targets) == set(video.frames[0].targets)
    starts = [sum(len(m) for m in matched[:t]) for t in range(len(matched))]
    assert (rois.previous[:len(matched[0])] == -1).all()  # the first frame has no frame before it
    for t in range(1, len(video)):
        for j, track in enumerate(matched[t].tolist()):
            row = video.frames[t - 1].truth_rois.get(track)
            got = int(rois.previous[starts[t] + j])
            if row is None:  # track 2 is hidden in frame 2, so frame 3's ROIs of it start afresh
                assert got == -1
            else:
                rows_before = torch.nonzero(video.frames[t - 1].roi_track_ids >= 0).flatten().tolist()
                assert got == starts[t - 1] + rows_before.index(row)
    assert (rois.previous[starts[3]:starts[4]][matched[3] == 2] == -1).all()


def test_variant_shares_the_frozen_parts_and_trains_only_its_refine_head(model: PCAN, video: CachedVideo) -> None:
    variant = refine_variant(model, seed=0, fg_prototypes=0, bg_prototypes=1)
    assert variant.config.fg_prototypes == 0 and variant.config.memory_length == 3
    for name, p in variant.named_parameters():
        assert p.requires_grad == name.startswith("refine_head.")
        if not p.requires_grad:
            assert torch.equal(p, model.state_dict()[name])
    rois = with_maps(variant, frozen_rois(model, [video]))
    batch = RoiBatches(rois, 6, seed=1).batch(0)
    assert torch.equal(batch[1], RoiBatches(rois, 6, seed=1).batch(0)[1])  # a function of seed and iteration
    loss = sum(refine_loss(variant, batch).values())
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in variant.refine_head.parameters())
    bilayer = refine_variant(model, seed=0, refine="bilayer")
    terms = refine_loss(bilayer, (with_maps(bilayer, rois), batch[1]))
    assert {"loss_mask", "loss_occluder_mask"} <= set(terms)


def test_precomputed_maps_are_the_maps_of_each_batch_and_belong_to_their_settings(model: PCAN,
                                                                                  video: CachedVideo) -> None:
    """A set mapped in chunks gives every ROI the maps its own batch would compute (propagated ROIs
    and fresh ones alike); a variant with other prototype numbers or momentum refuses it."""
    rois = frozen_rois(model, [video])
    variant = refine_variant(model, seed=0, fg_prototypes=2, bg_prototypes=3)
    mapped = with_maps(variant, rois, chunk=5)
    index = torch.randint(len(rois), (17,), generator=torch.Generator().manual_seed(4))
    assert (rois.previous[index] >= 0).any() and (rois.previous[index] < 0).any()
    assert mapped.maps.shape == (len(rois), 2, 14, 14)
    torch.testing.assert_close(mapped.maps[index], roi_maps(variant, rois, index), rtol=0, atol=1e-5)
    moved = refine_variant(model, seed=0, fg_prototypes=2, bg_prototypes=3, momentum=1.0)
    assert not torch.allclose(with_maps(moved, rois).maps, mapped.maps)  # momentum matters, so it is checked
    for other in (moved, refine_variant(model, seed=0)):
        with pytest.raises(InputError, match="with_maps"):
            refine_loss(other, (mapped, index))
    with pytest.raises(InputError, match="with_maps"):
        refine_loss(variant, (rois, index))


def test_a_retraining_maps_exactly_the_rois_its_schedule_draws(model: PCAN, video: CachedVideo) -> None:
    """Only drawn ROIs are mapped (the rest stay zero and are refused), and the drawn ones are
    those of the batches the trainer will ask for."""
    rois = frozen_rois(model, [video])
    variant = refine_variant(model, seed=0)
    sampler = RoiBatches(rois, 3, seed=2)
    drawn = sampler.drawn(4)
    assert torch.equal(drawn, torch.unique(torch.cat([sampler.batch(i)[1] for i in range(4)])))
    assert len(drawn) < len(rois)
    mapped = with_maps(variant, rois, drawn, chunk=2)
    torch.testing.assert_close(mapped.maps[drawn], with_maps(variant, rois).maps[drawn], rtol=0, atol=1e-5)
    assert torch.equal(mapped.mapped, torch.isin(torch.arange(len(rois)), drawn))
    assert not mapped.maps[~mapped.mapped].any()
    refine_loss(variant, (mapped, sampler.batch(3)[1]))
    outside = torch.nonzero(~mapped.mapped).flatten()[:1]
    with pytest.raises(InputError, match="have no maps"):
        refine_loss(variant, (mapped, torch.cat([drawn[:2], outside])))


def test_refine_training_lowers_the_loss_and_leaves_the_frame_module(model: PCAN, video: CachedVideo, tmp_path) -> None:
    rois = frozen_rois(model, [video])
    variant = refine_variant(model, seed=0)
    mapped = with_maps(variant, rois)
    with torch.no_grad():
        before = float(sum(refine_loss(variant, (mapped, torch.arange(len(rois)))).values()))
    run = train_refine(variant, RefineTraining(iters=30, rois_per_batch=8, lr=1e-2, val_rois=8), rois, rois, seed=0,
                       out_dir=tmp_path / "r")
    with torch.no_grad():
        after = float(sum(refine_loss(run.model, (mapped, torch.arange(len(rois)))).values()))
    assert after < before
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in run.model.state_dict().items() if k.startswith("frame."))
    assert (tmp_path / "r" / "checkpoints" / "model_final.pt").is_file()


def test_refine_training_with_a_weight_average_validates_and_returns_the_average(model: PCAN, video: CachedVideo,
                                                                              tmp_path) -> None:
    """The run without the average follows the same raw trajectory, so its head is the raw weights:
    the averaged run returns other weights, and its last validation point is their loss."""
    rois = frozen_rois(model, [video])
    training = RefineTraining(iters=12, rois_per_batch=8, lr=1e-2, val_rois=8, ema_decay=0.8)
    run = train_refine(refine_variant(model, seed=0), training, rois, rois, seed=0, out_dir=tmp_path / "ema")
    raw = train_refine(refine_variant(model, seed=0), replace(training, ema_decay=0.0), rois, rois, seed=0)
    averaged, last = run.model.refine_head.state_dict(), raw.model.refine_head.state_dict()
    assert not all(torch.equal(averaged[k], last[k]) for k in averaged)
    fixed = torch.randperm(len(rois), generator=torch.Generator().manual_seed(0))[:8]
    measured = FixedBatchValidation(run.model, [(with_maps(run.model, rois), fixed)], 1, loss_fn=refine_loss).measure()
    assert read_curve(tmp_path / "ema" / "val_loss.csv")[-1][1] == pytest.approx(measured, rel=1e-6)


def test_variants_share_the_identities_and_the_default_variant_is_track_pcan(model: PCAN, video: CachedVideo) -> None:
    qd = QuasiDenseConfig(init_score=0.5)
    other = refine_variant(model, seed=3, fg_prototypes=1, bg_prototypes=1)
    out = track_pcan_variants(model, [video], {"same": (model, 0.2), "other": (other, 1.0)}, qd)
    alone = track_pcan(model, [video], qd, momentum=0.2)[video.video_id]
    same, diff = out["same"][video.video_id], out["other"][video.video_id]
    assert same.ytvis_results(1) == alone.ytvis_results(1)
    ids = lambda t: [(r["category_id"], r["score"]) for r in t.ytvis_results(1)]  # noqa: E731
    assert ids(same) == ids(diff)  # the same tracks (identities, categories, scores); masks may differ


def test_setup_without_the_default_row_names_the_setting() -> None:
    with pytest.raises(InputError, match="pcan.trained"):
        PCANSetup.from_dict({"trained": {"length_1": {"memory_length": 1}}})
    assert PCANSetup.from_dict({"prototype_numbers": [[1, 2]]}).prototype_numbers == ((1, 2),)
