"""VOIN inpainting training: crops, the propagated-input cache, the GAN step (both networks update,
no gradient crosses between them, every generator term trains the generator), exact resume, the
NaN guard, the rows, and whole-sample prediction. Tiny hand-made samples and networks only."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from instseg.engine.trainer import NonFiniteLossError
from instseg.errors import InputError
from instseg.video.voin.data.samples import VoiSample
from instseg.video.voin.generator import GeneratorConfig
from instseg.video.voin.inpaint_baselines import telea, zero_fill
from instseg.video.voin.inpaint_data import (CropSettings, PropagationCache, clip_tensors, crop_box, crop_sample,
                                             dis_flows)
from instseg.video.voin.inpaint_gan import (InpaintRow, InpaintTraining, build_models, build_optimizers,
                                            discriminator_terms, gan_step, generate, generator_terms, voin_generator)
from instseg.video.voin.inpaint_training import (CropBatches, evaluate_inpainters, inpaint_clip, table_rows,
                                                 train_inpainter)

TINY = GeneratorConfig(channels=4, stage_blocks=0, dilations=(1,), mask_hidden=2)
K = 3  # classes


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: threads only contend (45 s against 5 s on the shared 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _setup(**kw) -> InpaintTraining:
    base = dict(iters=4, batch_size=2, clip_frames=3, crop_size=16, context=0.1, tpatch_channels=(4, 4, 8, 8, 8, 8),
                multiclass_channels=(4, 4, 8, 8, 8), val_clips=2, val_points=2, checkpoint_every=2, lr=1e-3,
                warmup=0.25, decay_at=0.5)
    return InpaintTraining(**(base | kw))


def _sample(size: int = 40, half: int = 8, length: int = 4, seed: int = 0, video: int = 1) -> VoiSample:
    """A textured square target (side 2 * half) moving right 1 px a frame on a noise background,
    a grey disc pasted over its lower right corner."""
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, 256, size=(length, size, size, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    amodal = np.zeros((length, size, size), bool)
    occluder = np.zeros_like(amodal)
    c = size // 2
    for t in range(length):
        amodal[t] = (abs(yy - c) < half) & (abs(xx - (c - 2 + t)) < half)
        occluder[t] = (yy - (c + half // 2)) ** 2 + (xx - (c + half // 2 + t)) ** 2 < (half * 0.8) ** 2
        clean[t][amodal[t]] = (200 + 10 * t, 60, 30)
    corrupted = clean.copy()
    corrupted[occluder] = 128
    occluded = amodal & occluder
    return VoiSample(corrupted, clean, amodal, occluded, occluder, amodal & ~occluder,
                     {"kind": "synthetic", "video_id": video, "track_id": 1, "start": seed, "length": length})


def _crops(n: int = 4, crop: CropSettings = CropSettings(16, 0.1), propagation=None):
    return [crop_sample(s, crop, i % K, propagation(s) if propagation is not None else None)
            for i, s in enumerate(_sample(seed=i) for i in range(n))]


# ------------------------------------------------------------------------------------------ crops

def test_crop_box_inside_the_frame_and_around_the_target():
    s = _sample()
    y0, x0, side = crop_box(s.amodal, CropSettings(16, 0.1))
    ys, xs = np.nonzero(s.amodal.any(0))
    assert 0 <= y0 and 0 <= x0 and y0 + side <= 40 and x0 + side <= 40
    assert y0 <= ys.min() and ys.max() < y0 + side and x0 <= xs.min() and xs.max() < x0 + side
    assert side == math.ceil(18 * 1.2)  # the union is 15 x 18 px, 10% context on each side
    assert crop_box(s.amodal, CropSettings(32, 0.1))[2] == 32  # a small target: native resolution
    corner = np.zeros((2, 40, 40), bool)
    corner[:, :3, :3] = True  # near the corner: shifted inside, not padded
    assert crop_box(corner, CropSettings(16, 0.1))[:2] == (0, 0)
    assert crop_box(np.ones((2, 40, 40), bool), CropSettings(16, 0.5))[2] == 40  # at most the frame


def test_native_crop_is_the_frame_window_for_every_frame():
    s = _sample()
    crop = crop_sample(s, CropSettings(32, 0.1), label=2)
    y0, x0, side = crop.box
    assert side == 32 and crop.label == 2
    window = (slice(None), slice(y0, y0 + 32), slice(x0, x0 + 32))
    np.testing.assert_array_equal(crop.corrupted, s.corrupted[window])
    np.testing.assert_array_equal(crop.occluded, s.occluded[window])
    np.testing.assert_array_equal(crop.amodal, s.amodal[window])
    target = np.where(s.occluded[..., None], s.clean, s.corrupted)[window]
    np.testing.assert_array_equal(crop.target, target)  # clean in the hole, the occluder stays outside it


def test_resized_crop_keeps_the_hole_and_known_cells_clean():
    s = _sample(size=40, half=12)
    crop = crop_sample(s, CropSettings(16, 0.1))
    y0, x0, side = crop.box
    assert side > 16 and crop.corrupted.shape == (4, 16, 16, 3)
    # every crop cell that covers a hole pixel is hole (area pooling by hand: nearest cell ranges)
    scale = side / 16
    for t in range(4):
        for i, j in zip(*np.nonzero(s.occluded[t, y0:y0 + side, x0:x0 + side])):
            assert crop.occluded[t, int(i // scale), int(j // scale)]
    known = ~crop.occluded
    assert known.any() and crop.occluded.any()
    np.testing.assert_array_equal(crop.corrupted[known], crop.target[known])  # nothing of the hole leaks in
    assert not (crop.visible & crop.occluded).any() and (crop.occluded <= crop.amodal).all()


def test_clip_tensors_shapes_range_and_symmetries():
    crop = _crops(1)[0]
    t = clip_tensors(crop, 1, 3)
    assert t["frames"].shape == (3, 3, 16, 16) and t["occluded"].shape == (1, 3, 16, 16)
    assert float(t["frames"].min()) >= -1 and float(t["frames"].max()) <= 1
    flipped = clip_tensors(crop, 1, 3, code=1 | 8)  # x flip and time reversal
    torch.testing.assert_close(flipped["target"], t["target"].flip(-1).flip(1))
    with pytest.raises(InputError, match="outside"):
        clip_tensors(crop, 2, 3)
    with pytest.raises(InputError, match="propagated"):
        clip_tensors(crop, propagated=True)


# ------------------------------------------------------------------------------ propagation cache

def test_propagated_input_is_computed_once_per_sample():
    calls = []

    def flows(sample):
        calls.append(sample.meta["start"])
        return dis_flows(sample)

    cache = PropagationCache(flows)
    first = _crops(3, propagation=cache)
    again = _crops(3, propagation=cache)
    assert calls == [0, 1, 2] and cache.computed == 3 and len(cache) == 3 and cache.seconds > 0
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.propagated, b.propagated)
        assert not (a.filled & ~a.occluded).any()  # only hole cells carry propagated pixels
    t = clip_tensors(first[0], propagated=True)
    assert float(t["propagated"][:, ~torch.from_numpy(first[0].filled)].abs().max()) == 0  # zero where none


def test_a_flow_hook_without_both_directions_is_refused():
    cache = PropagationCache(lambda s: {"forward": dis_flows(s)["forward"]})
    with pytest.raises(InputError, match="backward"):
        cache(_sample())


# -------------------------------------------------------------------------------------- GAN step

def _batch(propagated: bool = True):
    cache = PropagationCache() if propagated else None
    return CropBatches(_crops(4, propagation=cache), _setup(), 0, propagated).batch(0)


def _row(**kw) -> InpaintRow:
    return InpaintRow(**({"generator": TINY} | kw))


def _params(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_one_step_updates_generator_and_both_discriminators():
    row, setup = _row(), _setup()
    models = build_models(row, setup, K, seed=0)
    before = {k: _params(getattr(models, k)) for k in ("generator", "tpatch", "multiclass")}
    values = gan_step(models, build_optimizers(models, setup), _batch(), row, 0)
    assert {"d_tpatch", "d_multiclass", "g_hole", "g_valid", "g_adversarial", "g_multiclass"} <= set(values)
    for name, old in before.items():
        new = _params(getattr(models, name))
        assert any(not torch.equal(a, b) for a, b in zip(old, new)), name
    assert all(p.requires_grad for p in models.parameters())  # the freeze is undone


def test_no_gradient_crosses_between_the_two_steps():
    row, setup = _row(), _setup()
    batch = _batch()
    models = build_models(row, setup, K, seed=0)
    reference = copy.deepcopy(models)
    opts = build_optimizers(models, setup)
    gan_step(models, opts, batch, row, 0)
    # by hand: the discriminators' step alone, then the generator's gradient through the updated ones
    ref_opts = build_optimizers(reference, setup)
    out = generate(reference, batch, True)
    d_terms = discriminator_terms(reference, batch, out["inpainted"].detach(), row.weights)
    assert all(p.grad is None for p in reference.generator.parameters())  # the detached clip
    ref_opts["discriminators"].zero_grad()
    d_terms["total"].backward()
    d_grads = [p.grad.clone() for p in reference.discriminator_parameters()]
    ref_opts["discriminators"].step()
    reference.generator.zero_grad()
    generator_terms(reference, batch, out, row.weights)["total"].backward()
    for p, g in zip(models.discriminator_parameters(), d_grads):  # no generator-step gradient added
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0)
    for p, q in zip(models.generator.parameters(), reference.generator.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("term", ["hole", "valid", "adversarial", "multiclass"])
def test_every_generator_term_reaches_the_generator(term):
    row = _row()
    models = build_models(row, _setup(), K, seed=0)
    batch = _batch()
    terms = generator_terms(models, batch, generate(models, batch, True), row.weights)
    terms[term].backward()
    first = models.generator.encoder[0]
    assert float(first.conv.feature.weight.grad.abs().sum()) > 0
    assert float(first.fusion.net[0].weight.grad.abs().sum()) > 0  # the occlusion gating trains too


# ------------------------------------------------------------------------------- loop and resume

def _train(tmp_path=None, resume=False, callbacks=(), generator=voin_generator, row=None, **kw):
    setup = _setup(**kw)
    crops = _crops(4)
    return train_inpainter(row or _row(use_propagated=False), setup, crops, crops[:2], K, seed=1, out_dir=tmp_path,
                           resume=resume, generator=generator, callbacks=callbacks)


def test_resume_after_an_interruption_matches_an_uninterrupted_run(tmp_path):
    whole = _train(tmp_path / "whole")

    def crash(iteration, _row):
        if iteration == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "cut", callbacks=[crash])
    resumed = _train(tmp_path / "cut", resume=True)
    assert resumed.history[0]["iteration"] == 2  # it continued from the checkpoint at 2
    for (k, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert whole.val_curve == resumed.val_curve and len(whole.val_curve) == 2
    assert whole.final_losses == resumed.final_losses
    with pytest.raises(InputError, match="other settings"):
        _train(tmp_path / "cut", resume=True, lr=2e-3)


def test_plateau_check_reads_the_curve_and_the_phase_before_the_decay():
    run = _train(iters=8, val_points=4)
    assert [i for i, _ in run.val_curve] == [2, 4, 6, 8]
    assert run.plateau.phase_improvement is not None and run.sec_per_iter > 0
    assert run.history[3]["lr"] == pytest.approx(1e-3) and run.history[4]["lr"] == pytest.approx(1e-4)


class _NanAfter(nn.Module):
    """The tiny generator, whose output turns NaN from its ``n``-th call on."""

    def __init__(self, row: InpaintRow, n: int) -> None:
        super().__init__()
        self.inner, self.calls, self.n = voin_generator(row), 0, n

    def forward(self, *args):
        out = self.inner(*args)
        self.calls += 1
        if self.calls >= self.n:
            out = {k: v * float("nan") for k, v in out.items()}
        return out


def test_nan_guard_names_the_iteration_and_the_terms(tmp_path):
    # calls: one per iteration, plus the validation's (val_points=1: only at the end)
    with pytest.raises(NonFiniteLossError) as err:
        _train(tmp_path, generator=lambda row: _NanAfter(row, 3), val_points=1)
    assert err.value.iteration == 2
    assert "d_tpatch" in err.value.losses and "iteration 2" in str(err.value)
    assert (tmp_path / "checkpoints" / "last.pt").exists()  # the checkpoint at 2 is kept


# ------------------------------------------------------------------------------------------- rows

def test_rows_build_what_they_say():
    rows = table_rows(TINY)
    assert set(rows) == {"voin", "voin_no_flow", "no_gating", "no_stam", "lgtsm"}
    built = {name: build_models(row, _setup(), K, seed=0) for name, row in rows.items()}
    assert built["voin"].generator.cfg.use_propagated and built["voin"].multiclass.stam is not None
    assert not built["voin_no_flow"].generator.cfg.use_propagated
    assert built["no_gating"].generator.mask_fusion_parameters() == 0
    assert built["no_stam"].multiclass.stam is None
    lgtsm = built["lgtsm"]
    assert lgtsm.multiclass is None and lgtsm.tpatch is not None and not lgtsm.generator.cfg.use_propagated
    assert lgtsm.generator.mask_fusion_parameters() == 0
    assert set(build_optimizers(lgtsm, _setup())) == {"generator", "discriminators"}
    values = gan_step(lgtsm, build_optimizers(lgtsm, _setup()), _batch(False), rows["lgtsm"], 0)
    assert "g_multiclass" not in values and "d_multiclass" not in values and "g_adversarial" in values
    n_voin = sum(p.numel() for p in built["voin"].discriminator_parameters())
    assert sum(p.numel() for p in lgtsm.discriminator_parameters()) < n_voin


def test_row_from_params_and_bad_rows():
    row = InpaintRow.from_dict({"generator": {"channels": 8, "dilations": [2]}, "use_propagated": False,
                                "multiclass": False, "stam": False, "weights": {"adversarial": 0.1}})
    assert row.generator.dilations == (2,) and row.weights.adversarial == 0.1 and row.tpatch
    with pytest.raises(InputError, match="unknown"):
        InpaintRow.from_dict({"discriminator": True})
    with pytest.raises(InputError, match="on the row"):
        InpaintRow.from_dict({"generator": {"use_propagated": True}})
    with pytest.raises(InputError, match="stam"):
        InpaintRow.from_dict({"multiclass": False})
    with pytest.raises(InputError, match="unknown"):
        InpaintTraining.from_dict({"iter": 3})
    with pytest.raises(InputError, match="multiple of 4"):
        InpaintTraining.from_dict({"crop_size": 18})


# ------------------------------------------------------------------------------------- prediction

@pytest.mark.parametrize("half", [6, 12])  # native-resolution and resized crops
def test_inpaint_clip_keeps_everything_outside_the_hole(half):
    row = _row()
    models = build_models(row, _setup(), K, seed=0)
    s = _sample(half=half)
    cache = PropagationCache()
    out = inpaint_clip(models.generator, s, CropSettings(16, 0.1), cache)
    assert out.dtype == np.uint8 and out.shape == s.corrupted.shape
    np.testing.assert_array_equal(out[~s.occluded], s.corrupted[~s.occluded])
    assert (out[s.occluded] != s.corrupted[s.occluded]).any()  # the hole was filled
    with pytest.raises(InputError, match="propagated"):
        inpaint_clip(models.generator, s, CropSettings(16, 0.1))  # this generator reads them


def test_evaluation_scores_the_hole_against_the_clean_frames():
    samples = [_sample(seed=i) for i in range(2)]
    scores = evaluate_inpainters({"oracle_ish": lambda s: np.where(s.occluded[..., None], s.clean // 2 * 2,
                                                                   s.corrupted),
                                  "zero_fill": zero_fill, "telea": telea}, samples)
    assert scores["zero_fill"]["samples"] == 2
    assert scores["oracle_ish"]["psnr_hole"] > 45 > scores["telea"]["psnr_hole"] > scores["zero_fill"]["psnr_hole"]
    assert scores["zero_fill"]["psnr"] > scores["zero_fill"]["psnr_hole"]  # the whole frame dilutes the hole
