"""VOIN's discriminators (T-PatchGAN, multi-class with STAM) and its losses."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm

from instseg.errors import InputError
from instseg.video.voin.discriminators import STAM, MultiClassDiscriminator, TPatchGAN
from instseg.video.voin.generator import GeneratorConfig, OcclusionAwareGenerator
from instseg.video.voin.losses import (LossWeights, discriminator_loss, generator_loss, hinge_d_loss, hinge_g_loss,
                                       masked_l1, multiclass_d_loss, multiclass_g_loss, reconstruction_losses)

SMALL = (4, 4, 8, 8, 8, 8)


def test_tpatchgan_layers():
    d = TPatchGAN()
    assert len(d.convs) == 6
    assert [c.out_channels for c in d.convs] == [64, 128, 256, 256, 256, 256]
    assert d.convs[0].in_channels == 4
    for conv in d.convs:
        assert conv.kernel_size == (3, 5, 5) and conv.stride == (1, 2, 2) and conv.padding == (1, 2, 2)
        assert parametrize.is_parametrized(conv, "weight")
        assert any(isinstance(p, _SpectralNorm) for p in conv.parametrizations.weight)
    shapes = []
    hooks = [c.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape))) for c in d.convs]
    out = d(torch.zeros(1, 3, 2, 64, 64), torch.zeros(1, 1, 2, 64, 64))
    for h in hooks:
        h.remove()
    assert shapes == [(1, 64, 2, 32, 32), (1, 128, 2, 16, 16), (1, 256, 2, 8, 8), (1, 256, 2, 4, 4),
                      (1, 256, 2, 2, 2), (1, 256, 2, 1, 1)]
    assert out.shape == (1, 256, 2, 1, 1)


def test_spectral_norm_bounds_each_conv():
    torch.manual_seed(0)
    d = TPatchGAN(channels=SMALL)
    d.train()
    for conv in d.convs:
        # power iterations run on each weight access in training mode; 30 left sigma off by > 1e-2 for
        # about a quarter of the seeds, 200 for none of 60
        for _ in range(200):
            w = conv.weight
        sigma = torch.linalg.matrix_norm(w.detach().reshape(w.shape[0], -1), ord=2)
        assert abs(float(sigma) - 1) < 1e-2


def test_multiclass_outputs_k_plus_one_logits():
    k = 5
    d = MultiClassDiscriminator(k)
    assert [c.out_channels for c in d.convs] == [64, 128, 256, 256, 256, k + 1]
    assert all(c.kernel_size == (3, 5, 5) and parametrize.is_parametrized(c, "weight") for c in d.convs)
    seen = {}
    d.stam.register_forward_hook(lambda m, i, o: seen.update(inp=tuple(i[0].shape), out=tuple(o.shape)))
    out = d(torch.zeros(2, 3, 3, 64, 64), torch.zeros(2, 1, 3, 64, 64))
    assert seen == {"inp": (2, 256, 3, 4, 4), "out": (2, 256, 3, 4, 4)}  # after the 4th conv
    assert out["patch_logits"].shape == (2, k + 1, 3, 1, 1) and out["logits"].shape == (2, k + 1)
    assert d.fake_class == k
    torch.testing.assert_close(out["logits"], out["patch_logits"].mean(dim=(2, 3, 4)))


def test_no_stam_ablation():
    with_stam = MultiClassDiscriminator(3, channels=SMALL[:5])
    without = MultiClassDiscriminator(3, channels=SMALL[:5], stam=False)
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert without.stam is None
    assert count(with_stam) - count(without) == count(with_stam.stam)
    assert without(torch.zeros(1, 3, 2, 32, 32), torch.zeros(1, 1, 2, 32, 32))["logits"].shape == (1, 4)


def test_stam_shapes_and_residual_identity():
    stam = STAM(16, reduction=4)
    x = torch.randn(2, 16, 5, 6, 7)
    a = stam.attention(x)
    assert a["spatial"].shape == (2, 1, 5, 6, 7) and a["temporal"].shape == (2, 1, 5, 1, 1)
    assert ((a["spatial"] > 0) & (a["spatial"] < 1)).all()
    torch.testing.assert_close(a["temporal"].sum(dim=2).flatten(), torch.full((2,), 5.0))
    y = stam(x)
    assert y.shape == x.shape and not torch.allclose(y, x)
    with torch.no_grad():
        for p in list(stam.spatial_out.parameters()) + list(stam.temporal_out.parameters()):
            p.zero_()
    assert torch.equal(stam(x), x)
    # one branch alone: out = x + P_s(x * A_s)
    with torch.no_grad():
        torch.nn.init.eye_(stam.spatial_out.weight.view(16, 16))
    torch.testing.assert_close(stam(x), x + x * stam.attention(x)["spatial"])


def test_discriminator_bad_input():
    d = TPatchGAN(channels=SMALL)
    with pytest.raises(InputError, match="mask has T=3 but frames have T=2"):
        d(torch.zeros(1, 3, 2, 16, 16), torch.zeros(1, 1, 3, 16, 16))
    with pytest.raises(InputError, match="frames must be"):
        d(torch.zeros(1, 4, 2, 16, 16), torch.zeros(1, 1, 2, 16, 16))
    with pytest.raises(InputError, match="pass mask"):
        d(torch.zeros(1, 3, 2, 16, 16))
    with pytest.raises(InputError, match="mask must be"):
        MultiClassDiscriminator(2, channels=SMALL[:5])(torch.zeros(1, 3, 2, 16, 16), torch.zeros(1, 2, 2, 16, 16))
    with pytest.raises(InputError, match="num_classes"):
        MultiClassDiscriminator(0)


def test_masked_l1_by_hand():
    pred = torch.tensor([1.0, 3.0, -2.0, 0.0]).reshape(1, 1, 1, 1, 4).repeat(1, 2, 1, 1, 1)
    pred[:, 1] *= 2  # channel 2: [2, 6, -4, 0]
    target = torch.zeros_like(pred)
    hole = torch.tensor([1.0, 0.0, 1.0, 0.0]).reshape(1, 1, 1, 1, 4)
    terms = reconstruction_losses(pred, target, hole)
    # hole pixels 0 and 2, both channels: (1 + 2 + 2 + 4) / 4; valid pixels 1 and 3: (3 + 0 + 6 + 0) / 4
    assert float(terms["hole"]) == pytest.approx(9 / 4)
    assert float(terms["valid"]) == pytest.approx(9 / 4)
    hole2 = torch.tensor([0.0, 1.0, 0.0, 0.0]).reshape(1, 1, 1, 1, 4)
    assert float(masked_l1(pred, target, hole2)) == pytest.approx((3 + 6) / 2)
    assert float(masked_l1(pred, target, torch.zeros_like(hole))) == 0.0
    with pytest.raises(InputError, match="differ in shape"):
        masked_l1(pred, target[:, :1], hole)


def test_hinge_by_hand():
    real = torch.tensor([2.0, 0.5])
    fake = torch.tensor([-2.0, 0.5])
    # real: relu(-1), relu(0.5) -> 0.25; fake: relu(-1), relu(1.5) -> 0.75
    assert float(hinge_d_loss(real, fake)) == pytest.approx(1.0)
    assert float(hinge_g_loss(fake)) == pytest.approx(0.75)


def test_multiclass_by_hand():
    real = torch.tensor([[2.0, 0.0, 0.0]])
    fake = torch.tensor([[0.0, 0.0, 1.0]])
    labels = torch.tensor([0])
    ce_real = -math.log(math.exp(2) / (math.exp(2) + 2))
    ce_fake = -math.log(math.e / (math.e + 2))  # class 2 = fake
    assert float(multiclass_d_loss(real, fake, labels)) == pytest.approx(ce_real + ce_fake)
    assert float(multiclass_g_loss(fake, labels)) == pytest.approx(-math.log(1 / (math.e + 2)))
    with pytest.raises(InputError, match="real categories 0..1"):
        multiclass_g_loss(fake, torch.tensor([2]))  # the fake class is not a label
    with pytest.raises(InputError, match="labels"):
        multiclass_d_loss(real, fake, torch.tensor([0, 1]))


def test_totals_by_hand():
    w = LossWeights.from_dict({"hole": 2.0, "valid": 0.5, "adversarial": 0.1, "multiclass": 0.3,
                               "d_tpatch": 1.5, "d_multiclass": 0.25})
    pred = torch.ones(1, 3, 1, 1, 2)
    target = torch.zeros_like(pred)
    hole = torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 1, 2)
    fake_scores, real_scores = torch.tensor([0.5]), torch.tensor([0.5])
    logits = torch.zeros(1, 3)
    labels = torch.tensor([1])
    g = generator_loss(pred, target, hole, fake_scores, logits, labels, w)
    assert float(g["total"]) == pytest.approx(2.0 * 1 + 0.5 * 1 + 0.1 * -0.5 + 0.3 * math.log(3))
    d = discriminator_loss(real_scores, fake_scores, logits, logits, labels, w)
    assert float(d["tpatch"]) == pytest.approx(0.5 + 1.5)
    assert float(d["total"]) == pytest.approx(1.5 * 2.0 + 0.25 * 2 * math.log(3))
    with pytest.raises(InputError, match="unknown keys"):
        LossWeights.from_dict({"hol": 1.0})


def _models(k: int = 3):
    torch.manual_seed(0)
    g = OcclusionAwareGenerator(GeneratorConfig(channels=4, stage_blocks=0, dilations=(2,), mask_hidden=4))
    return g, TPatchGAN(channels=SMALL), MultiClassDiscriminator(k, channels=SMALL[:5])


def _batch():
    gen = torch.Generator().manual_seed(3)
    amodal = torch.zeros(2, 1, 2, 16, 16)
    amodal[..., 3:13, 3:13] = 1
    occluded = amodal.clone()
    occluded[..., :, 8:] = 0
    target = torch.rand(2, 3, 2, 16, 16, generator=gen) * 2 - 1
    return target, amodal - occluded, occluded, amodal, torch.tensor([0, 2])


def _grad_norm(module):
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_gradients_reach_the_right_networks():
    g, dt, dm = _models()
    target, visible, occluded, amodal, labels = _batch()
    out = g(target, visible, occluded, amodal)
    terms = generator_loss(out["raw"], target, occluded, dt(out["inpainted"], occluded),
                           dm(out["inpainted"], amodal)["logits"], labels)
    for name in ("hole", "valid", "adversarial", "multiclass"):
        for m in (g, dt, dm):
            m.zero_grad(set_to_none=True)
        terms[name].backward(retain_graph=True)
        first = g.encoder[0].conv.feature.weight.grad  # the earliest layer: the whole path
        assert first is not None and float(first.abs().sum()) > 0, name
        assert g.encoder[0].fusion.net[0].weight.grad.abs().sum() > 0, name  # f̄ trains too
    fake = out["inpainted"].detach()
    d_terms = discriminator_loss(dt(target, occluded), dt(fake, occluded), dm(target, amodal)["logits"],
                                 dm(fake, amodal)["logits"], labels)
    for name, net, other in (("tpatch", dt, dm), ("multiclass", dm, dt)):
        for m in (g, dt, dm):
            m.zero_grad(set_to_none=True)
        d_terms[name].backward(retain_graph=True)
        assert net.convs[0].parametrizations.weight.original.grad.abs().sum() > 0, name
        assert _grad_norm(other) == 0 and _grad_norm(g) == 0, name
    # the last backward was the multi-class term: STAM's branches learn from it
    assert dm.stam.spatial.weight.grad.abs().sum() > 0 and dm.stam.temporal[0].weight.grad.abs().sum() > 0


def test_discriminators_and_losses_autocast_bfloat16_on_cpu():
    g, dt, dm = _models()
    target, visible, occluded, amodal, labels = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = g(target, visible, occluded, amodal)
        scores = dt(out["inpainted"], occluded)
        logits = dm(out["inpainted"], amodal)["logits"]
        terms = generator_loss(out["raw"], target, occluded, scores, logits, labels)
    assert scores.dtype == torch.bfloat16
    assert terms["total"].dtype == torch.float32 and torch.isfinite(terms["total"])
    terms["total"].backward()
    assert torch.isfinite(g.encoder[0].conv.feature.weight.grad).all()
