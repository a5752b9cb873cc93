"""PCAN's model and training on a small synthetic cache: configuration errors, ROI pooling against
roi_align by hand, the memory-length-1 capacity twin, the frame-attention variants, the released
prototype bank, and gradients of the trained loss reaching the frame module's encoders."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_align

from instseg.errors import InputError
from instseg.video.layers.frame_attention import (FrameNonLocalAttention, FrameTransformerAttention,
                                                  RunningPrototypeBank)
from instseg.video.models.inference import FrameDetections
from instseg.video.models.trackers.embedding import QuasiDenseEmbedHead
from instseg.video.pcan.cache import TARGET_KEYS, CachedFrame, CachedVideo
from instseg.video.pcan.model import PCAN, PCANConfig, level_prototypes
from instseg.video.pcan.training import ClipBatches, PCANTraining, clips_loss, key_frames, train_pcan

C = 8
SMALL = dict(embed_conv_channels=8, embed_fc_channels=16, embed_dim=8, refine_channels=8, key_channels=8)


def _fusion_moved(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with its frame fusions off their zero initialisation, as after some training:
    only then does the memory change the output (and the encoders get gradient)."""
    torch.manual_seed(7)
    for name, sub in module.named_modules():
        if name.split(".")[-1] == "fuse":
            torch.nn.init.normal_(sub.weight, std=0.1)
    return module


def _frame(generator: torch.Generator, t: int) -> CachedFrame:
    levels = {name: torch.randn(C, s, s, generator=generator).half() for name, s in
              (("0", 16), ("1", 8), ("2", 4), ("3", 2))}
    boxes = torch.tensor([[4.0, 4, 30, 30], [30, 28, 60, 62], [6, 5, 31, 29], [40, 2, 50, 12]])
    boxes[:, ::2] += t  # the objects drift
    det = FrameDetections(boxes[:2], torch.tensor([0.9, 0.8]), torch.tensor([1, 2]), torch.zeros(2, 64, 64, dtype=torch.bool))
    logits = torch.randn(4, 28, 28, generator=generator).half()
    targets = {k: torch.rand(4, 28, 28, generator=generator) > 0.5 for k in TARGET_KEYS}
    track_ids = torch.tensor([1, 2, 1, -1]) if t != 2 else torch.tensor([1, -1, 1, -1])  # track 2 hides in frame 2
    truth = {1: 0} if t == 2 else {1: 0, 2: 1}
    return CachedFrame(levels, (64, 64), det, logits[:2], boxes, torch.tensor([1, 2, 1, 1]), track_ids, logits,
                       truth, targets)


@pytest.fixture
def video() -> CachedVideo:
    generator = torch.Generator().manual_seed(0)
    return CachedVideo(1, "v", (64, 64), [_frame(generator, t) for t in range(8)])


def test_config_names_what_is_wrong() -> None:
    with pytest.raises(InputError, match="unknown levels"):
        PCANConfig(levels=("p9",))
    with pytest.raises(InputError, match="attention"):
        PCANConfig(attention="lstm")
    with pytest.raises(InputError, match="unknown keys"):
        PCANConfig.from_dict({"memory": 3})
    assert PCANConfig.from_dict(PCANConfig(memory_length=8).to_dict()) == PCANConfig(memory_length=8)


def test_prototypes_per_level_are_capped_at_one_per_four_positions() -> None:
    assert [level_prototypes(30, n) for n in (256, 64, 16, 2)] == [30, 16, 4, 1]


def test_pool_is_the_mean_of_roi_align_over_levels(video: CachedVideo) -> None:
    model = PCAN(PCANConfig(**SMALL), C)
    levels = {k: v[None].float() for k, v in video.frames[0].levels.items()}
    boxes = video.frames[0].rois
    expected = torch.stack([roi_align(f, [boxes], 14, spatial_scale=f.shape[-1] / 64, sampling_ratio=1, aligned=True)
                            for f in levels.values()]).mean(0)
    torch.testing.assert_close(model.pool(levels, [boxes], (64, 64), (64, 64)), expected)


def test_memory_length_one_is_the_capacity_twin() -> None:
    one = _fusion_moved(PCAN(PCANConfig(memory_length=1, **SMALL), C))
    four = PCAN(PCANConfig(memory_length=4, **SMALL), C)
    assert sum(p.numel() for p in one.parameters()) == sum(p.numel() for p in four.parameters())
    four.load_state_dict(one.state_dict())
    levels = {"1": torch.randn(1, C, 8, 8), "2": torch.randn(1, C, 4, 4), "3": torch.randn(1, C, 2, 2)}
    memory = [four.memory_entry({k: torch.randn_like(v) for k, v in levels.items()}) for _ in range(3)]
    without = one.enhance(levels, memory)  # length 1 ignores any memory it is handed
    torch.testing.assert_close(without["1"], one.enhance(levels, [])["1"])
    assert not torch.allclose(four.enhance(levels, memory)["1"], without["1"])


@pytest.mark.parametrize("module", [_fusion_moved(FrameNonLocalAttention(C, 4)),
                                    _fusion_moved(FrameTransformerAttention(C, 2))])
def test_baseline_frame_modules_keep_the_shape_and_read_the_memory(module: torch.nn.Module) -> None:
    feature = torch.randn(2, C, 4, 4)
    memory = [module.memory_entry(torch.randn(2, C, 4, 4)) for _ in range(2)]
    out = module(feature, memory)
    assert out.shape == feature.shape
    assert not torch.allclose(out, module(feature, []))


def test_released_bank_is_a_running_average_and_weight_zero_is_the_identity() -> None:
    feature = torch.randn(1, C, 4, 4)
    assert torch.equal(RunningPrototypeBank(num=4, weight=0.0)(feature), feature)
    bank = RunningPrototypeBank(num=4)
    first, second = torch.randn(1, C, 4, 4), torch.randn(1, C, 4, 4)
    bank(first)
    mu_first = bank._bank.clone()
    bank(second)
    fresh = RunningPrototypeBank(num=4)
    fresh._bank = mu_first  # the second frame's EM starts from the bank, as in the running call
    mu_second = fresh._fit(torch.nn.functional.normalize(second.flatten(2).transpose(1, 2), dim=-1))
    torch.testing.assert_close(bank._bank, (mu_first + mu_second) / 2)
    bank.reset()
    assert bank._bank is None


def test_clips_need_a_full_memory_and_are_a_function_of_seed_and_iteration(video: CachedVideo) -> None:
    assert [t for _, t in key_frames([video], 4)] == list(range(3, 8))
    batches = ClipBatches([video], 3, 3, 4, seed=1)
    assert batches.batch(5) == ClipBatches([video], 3, 3, 4, seed=1).batch(5)
    assert all(t >= 3 and r >= 3 and r != t for _, t, r in batches.batch(5))


@pytest.mark.parametrize("attention", ["prototypical", "nonlocal", "transformer"])
def test_the_trained_loss_reaches_the_frame_module(video: CachedVideo, attention: str) -> None:
    torch.manual_seed(0)
    model = _fusion_moved(PCAN(PCANConfig(attention=attention, memory_length=3, **SMALL), C))
    losses = clips_loss(model, [(video, 3, 2), (video, 5, 6)])
    assert {"loss_track", "loss_track_aux", "loss_mask"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for name, parameter in model.named_parameters():
        # the 2x2 level has one prototype: every key is assigned to it, so its key encoder cannot matter
        single = attention == "prototypical" and name.startswith("frame.3.") and ".key." in name
        if name.startswith("frame.") and not single and ("key" in name or "value" in name or ".q." in name or ".v." in name):
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    refine = [p for n, p in model.named_parameters() if n.startswith("refine_head")]
    assert all(p.grad is not None for p in refine)


def test_mask_loss_alone_trains_the_frame_module_through_the_prototypes(video: CachedVideo) -> None:
    torch.manual_seed(0)
    model = _fusion_moved(PCAN(PCANConfig(memory_length=3, **SMALL), C))
    clips_loss(model, [(video, 3, 2)])["loss_mask"].backward()
    assert model.frame["1"].inner.key.weight.grad.abs().sum() > 0


def test_bilayer_refine_trains_bcnet_terms(video: CachedVideo) -> None:
    model = PCAN(PCANConfig(refine="bilayer", memory_length=2, **SMALL), C)
    losses = clips_loss(model, [(video, 4, 3)])
    assert {"loss_mask", "loss_boundary", "loss_occluder_mask", "loss_occluder_boundary"} <= set(losses)


def test_zero_prototypes_give_zero_maps_and_still_train(video: CachedVideo) -> None:
    model = PCAN(PCANConfig(fg_prototypes=0, bg_prototypes=0, memory_length=1, **SMALL), C)
    rois = torch.randn(3, C, 14, 14)
    assert torch.equal(model.maps(rois, model.prototypes(rois, torch.randn(3, 28, 28))), torch.zeros(3, 2, 14, 14))
    assert torch.isfinite(clips_loss(model, [(video, 1, 2)])["loss_mask"])


def test_tracking_refines_output_masks_and_momentum_zero_keeps_the_first_prototypes(video: CachedVideo) -> None:
    from instseg.video.models.trackers.quasi_dense import QuasiDenseConfig
    from instseg.video.pcan.tracking import TrackletPrototypes, track_pcan

    torch.manual_seed(0)
    model = PCAN(PCANConfig(memory_length=3, **SMALL), C).eval()
    tracked = track_pcan(model, [video], QuasiDenseConfig(init_score=0.5))[video.video_id]
    assert tracked.length == len(video) and tracked.ytvis_results(video.video_id)
    rois, logits = torch.randn(2, C, 14, 14), torch.randn(2, 28, 28)
    first = TrackletPrototypes(model, momentum=0.0)
    start = first.update([7, 8], rois, logits)
    again = first.update([7, 8], torch.randn(2, C, 14, 14), torch.randn(2, 28, 28))
    assert all(torch.equal(a, b) for a, b in zip(start, again))
    current = TrackletPrototypes(model, momentum=1.0)
    current.update([7], rois[:1], logits[:1])
    later, later_logits = torch.randn(1, C, 14, 14), torch.randn(1, 28, 28)
    expected = model.prototypes(later, later_logits, init=tuple(p[None] for p in current.state[7]))
    got = current.update([7], later, later_logits)
    assert all(torch.allclose(a, b) for a, b in zip(got, expected))


def _tiny_training(**changes: object) -> PCANTraining:
    return PCANTraining(**{"iters": 2, "clips_per_batch": 2, "val_clips": 2, **changes})


def test_training_starts_from_a_given_embedding_head_and_refuses_one_that_does_not_fit(video: CachedVideo) -> None:
    config = PCANConfig(memory_length=2, **SMALL)
    head = QuasiDenseEmbedHead(C, conv_channels=8, fc_channels=16, embed_dim=8)
    start = {k: v.clone() for k, v in head.state_dict().items()}
    model = train_pcan(config, _tiny_training(iters=1, lr=1e-12), [video], [video], seed=0, embed_init=head).model
    for name, value in model.embed_head.state_dict().items():
        assert torch.allclose(value, start[name], atol=1e-6), name  # lr ~0: still the given head
    fresh = train_pcan(config, _tiny_training(iters=1, lr=1e-12), [video], [video], seed=0).model
    assert not torch.allclose(fresh.embed_head.embed.weight, start["embed.weight"])
    with pytest.raises(InputError, match="does not fit"):
        train_pcan(config, _tiny_training(), [video], [video], seed=0,
                   embed_init=QuasiDenseEmbedHead(C, conv_channels=8, fc_channels=16, embed_dim=4))


def test_a_run_resumes_only_with_the_settings_it_was_trained_with(video: CachedVideo, tmp_path, caplog) -> None:
    """Same settings: the finished run is read back. Another model config, start head or input
    digest: the run is trained anew, as a fresh run in an empty folder would be."""
    config = PCANConfig(memory_length=2, **SMALL)
    first = train_pcan(config, _tiny_training(), [video], [video], seed=0, out_dir=tmp_path, inputs={"detector": "a"})
    with caplog.at_level("INFO", logger="instseg.engine.trainer"):
        again = train_pcan(config, _tiny_training(), [video], [video], seed=0, out_dir=tmp_path, resume=True,
                           inputs={"detector": "a"})
    assert again.val_curve == first.val_curve  # read back, nothing trained
    assert "resumed from" in caplog.text and "training anew" not in caplog.text
    head = QuasiDenseEmbedHead(C, conv_channels=8, fc_channels=16, embed_dim=8)
    changes = [(PCANConfig(memory_length=2, momentum=0.5, **SMALL), {"detector": "a"}, None),
               (config, {"detector": "b"}, None), (config, {"detector": "b"}, head)]
    for k, (cfg, inputs, start) in enumerate(changes):
        fresh = train_pcan(cfg, _tiny_training(), [video], [video], seed=0, out_dir=tmp_path / f"fresh{k}",
                           inputs=inputs, embed_init=start)
        retrained = train_pcan(cfg, _tiny_training(), [video], [video], seed=0, out_dir=tmp_path, resume=True,
                               inputs=inputs, embed_init=start)
        assert retrained.val_curve == fresh.val_curve
        assert all(torch.equal(v, fresh.model.state_dict()[n]) for n, v in retrained.model.state_dict().items())


@pytest.mark.parametrize("refine", ["temporal", "bilayer"])
def test_refined_masks_are_a_residual_over_the_coarse_logits(refine: str) -> None:
    """At initialisation the refine head returns (nearly) the detector's mask; with its predictor
    at zero exactly that mask, whatever the features and maps."""
    torch.manual_seed(0)
    model = PCAN(PCANConfig(refine=refine, memory_length=1, **SMALL), C).eval()
    rois, coarse = torch.randn(3, C, 14, 14), 4 * torch.randn(3, 28, 28)
    maps = model.maps(rois, model.prototypes(rois, coarse))
    out = model.refine(rois, maps, coarse)["mask"][:, 0]
    assert out.shape == coarse.shape and (out - coarse).abs().max() < 0.1
    head = model.refine_head.predictor if refine == "temporal" else model.refine_head.predictors["mask"].predictor
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    assert torch.equal(model.refine(rois, maps, coarse)["mask"][:, 0], coarse)


def test_decay_position_is_a_setting_and_checked() -> None:
    assert PCANTraining(iters=500, decay_at=0.6).engine_config(0).lr_steps == (300,)
    with pytest.raises(InputError, match="decay_at"):
        PCANTraining(iters=500, decay_at=1.5).engine_config(0)


def test_at_initialisation_pcan_embeds_as_the_baseline_head_does(video: CachedVideo) -> None:
    """The frame module starts as the identity, so the embedding head reads exactly the baseline's
    input: the detector's 7x7 pooler on the raw maps (torchvision's MultiScaleRoIAlign)."""
    from torchvision.ops import MultiScaleRoIAlign
    torch.manual_seed(0)
    model = PCAN(PCANConfig(memory_length=3, **SMALL), C).eval()
    frame = video.frames[3]
    levels = {k: v[None].float() for k, v in frame.levels.items()}
    memory = [model.memory_entry({k: v[None].float() for k, v in video.frames[t].levels.items()}) for t in (1, 2)]
    enhanced = model.enhance(levels, memory)
    rois = model.pool(enhanced, [frame.rois], (64, 64), (64, 64))
    base = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, sampling_ratio=2)(levels, [frame.rois], [(64, 64)])
    torch.testing.assert_close(model.embed(levels, rois, [frame.rois], (64, 64), (64, 64)), model.embed_head(base))
    moved = _fusion_moved(model)  # after training the memory changes the embeddings
    enhanced = moved.enhance(levels, memory)
    rois = moved.pool(enhanced, [frame.rois], (64, 64), (64, 64))
    assert not torch.allclose(moved.embed(levels, rois, [frame.rois], (64, 64), (64, 64)), model.embed_head(base))


def test_module_effects_are_zero_for_the_identity_frame_module_and_see_a_moved_one(video: CachedVideo) -> None:
    from instseg.video.pcan.diagnostics import module_effects

    torch.manual_seed(0)
    model = PCAN(PCANConfig(memory_length=3, **SMALL), C)
    fresh = module_effects(model, [video])
    assert fresh["frame_change"] == 0.0  # the fusion starts at zero
    assert all(0.0 <= fresh[k] <= 1.0 for k in ("refine_flips", "maps_flips"))
    moved = module_effects(_fusion_moved(model), [video])
    assert moved["frame_change"] > 0.01
    # with every refine-head parameter zero the refined mask is the coarse logits: nothing flips
    for p in model.refine_head.parameters():
        torch.nn.init.zeros_(p)
    zeroed = module_effects(model, [video])
    assert zeroed["refine_flips"] == zeroed["maps_flips"] == 0.0
