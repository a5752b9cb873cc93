"""VOIN's temporal shift, gated TSM convolution and occlusion-aware generator (eqs. 5.11-5.13)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from instseg.errors import InputError
from instseg.video.voin.generator import GeneratorConfig, OcclusionAwareGenerator, OcclusionAwareTSMConv
from instseg.video.voin.tsm import GatedTSMConv, temporal_shift

TINY = dict(channels=4, stage_blocks=0, dilations=(2,), mask_hidden=4)


def clip(b: int, t: int, h: int, w: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    amodal = (torch.rand(b, 1, t, h, w, generator=g) > 0.3).float()
    occluded = amodal * (torch.rand(b, 1, t, h, w, generator=g) > 0.5).float()
    return {"frames": torch.rand(b, 3, t, h, w, generator=g) * 2 - 1, "visible": amodal - occluded,
            "occluded": occluded, "amodal": amodal}


def shift_by_hand(x: torch.Tensor, fold: int, n: int) -> torch.Tensor:
    out = torch.zeros_like(x)
    c, t = x.shape[1], x.shape[2]
    for ch in range(c):
        group, side = divmod(ch // fold, 2) if ch < 2 * n * fold else (None, None)
        for i in range(t):
            if group is None:
                out[:, ch, i] = x[:, ch, i]
                continue
            k = group + 1
            src = i - k if side == 0 else i + k
            if 0 <= src < t:
                out[:, ch, i] = x[:, ch, src]
    return out


def test_temporal_shift_by_hand():
    x = torch.arange(1 * 8 * 4 * 2 * 3, dtype=torch.float32).reshape(1, 8, 4, 2, 3) + 1
    y = temporal_shift(x)  # fold = 8 // 4 = 2
    assert torch.equal(y[:, 0:2, 1:], x[:, 0:2, :-1]) and torch.equal(y[:, 0:2, 0], torch.zeros(1, 2, 2, 3))
    assert torch.equal(y[:, 2:4, :-1], x[:, 2:4, 1:]) and torch.equal(y[:, 2:4, -1], torch.zeros(1, 2, 2, 3))
    assert torch.equal(y[:, 4:], x[:, 4:])
    assert torch.equal(y, shift_by_hand(x, 2, 1))
    for fold, n in ((1, 1), (1, 2), (1, 3), (2, 2), (0, 1)):
        assert torch.equal(temporal_shift(x, fold, n), shift_by_hand(x, fold, n)), (fold, n)
    # a shift wider than the clip leaves only zeros in those channels
    assert torch.equal(temporal_shift(x[:, :, :1], 2, 1)[:, :4], torch.zeros(1, 4, 1, 2, 3))


def test_temporal_shift_rejects_bad_fold():
    x = torch.zeros(1, 8, 3, 2, 2)
    with pytest.raises(InputError, match="cannot shift"):
        temporal_shift(x, fold=3, n=2)
    with pytest.raises(InputError, match=r"\[B, C, T, H, W\]"):
        temporal_shift(torch.zeros(8, 3, 2, 2))


@pytest.mark.parametrize("activation,shift_gate", [("leaky_relu", False), ("relu", False), ("leaky_relu", True)])
def test_gated_conv_by_hand(activation, shift_gate):
    conv = GatedTSMConv(4, 2, kernel_size=1, n=1, fold=1, activation=activation, shift_gate=shift_gate)
    wf = torch.tensor([[1.0, -2.0, 0.5, 1.5], [-1.0, 0.25, 2.0, -0.5]])
    wg = torch.tensor([[0.5, 1.0, -1.0, 0.0], [2.0, -0.5, 0.0, 1.0]])
    with torch.no_grad():
        conv.feature.weight.copy_(wf[:, :, None, None, None])
        conv.feature.bias.copy_(torch.tensor([0.1, -0.2]))
        conv.gate.weight.copy_(wg[:, :, None, None, None])
        conv.gate.bias.copy_(torch.tensor([-0.3, 0.4]))
    x = torch.randn(2, 4, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    shifted = shift_by_hand(x, 1, 1)
    feature = torch.einsum("oc,bcthw->bothw", wf, shifted) + torch.tensor([0.1, -0.2])[:, None, None, None]
    gate_in = shifted if shift_gate else x
    gate = torch.einsum("oc,bcthw->bothw", wg, gate_in) + torch.tensor([-0.3, 0.4])[:, None, None, None]
    act = F.leaky_relu(feature, 0.2) if activation == "leaky_relu" else feature.clamp(min=0)
    torch.testing.assert_close(conv(x), torch.sigmoid(gate) * act)
    extra = torch.randn(2, 2, 3, 2, 2)
    torch.testing.assert_close(conv(x, extra), torch.sigmoid(gate + extra) * act)


def test_occlusion_gate_reads_the_masks_only_when_on():
    x = torch.randn(1, 8, 3, 8, 8)
    masks = torch.zeros(1, 2, 3, 8, 8)
    other = masks.clone()
    other[:, 0, 1, 2:6, 2:6] = 1  # occluded part
    amodal_only = masks.clone()
    amodal_only[:, 1, :, 1:7, 1:7] = 1
    for stride in (1, 2):
        torch.manual_seed(0)
        on = OcclusionAwareTSMConv(8, 8, GeneratorConfig(occlusion_gating=True), stride=stride)
        torch.manual_seed(0)
        off = OcclusionAwareTSMConv(8, 8, GeneratorConfig(occlusion_gating=False), stride=stride)
        g0 = on.gate_logits(x, masks)
        assert not torch.allclose(g0, on.gate_logits(x, other))
        assert not torch.allclose(g0, on.gate_logits(x, amodal_only))
        assert not torch.allclose(on(x, masks), on(x, other))
        assert torch.equal(off.gate_logits(x, masks), off.gate_logits(x, other))
        assert torch.equal(off(x, masks), off(x, amodal_only))
        # eq. 5.11's mask term only changes the frame whose masks changed
        diff = (g0 - on.gate_logits(x, other)).abs().amax(dim=(0, 1, 3, 4))
        assert diff[1] > 0 and diff[0] == 0 and diff[2] == 0


def test_gating_switch_changes_only_the_mask_fusion_parameters():
    on = OcclusionAwareGenerator(GeneratorConfig())
    off = OcclusionAwareGenerator(GeneratorConfig(occlusion_gating=False))
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert off.mask_fusion_parameters() == 0 and on.mask_fusion_parameters() > 0
    assert count(on) - count(off) == on.mask_fusion_parameters()


@pytest.mark.parametrize("t,h,w", [(1, 8, 8), (3, 16, 12), (5, 12, 20)])
@pytest.mark.parametrize("gating", [True, False])
def test_generator_output_shape(t, h, w, gating):
    g = OcclusionAwareGenerator(GeneratorConfig(**TINY, occlusion_gating=gating))
    c = clip(2, t, h, w)
    out = g(**c)
    assert out["raw"].shape == out["inpainted"].shape == (2, 3, t, h, w)
    # outside the hole the inpainted clip is the input
    keep = (c["occluded"] == 0).expand_as(c["frames"])
    assert torch.equal(out["inpainted"][keep], c["frames"][keep])
    assert out["raw"].abs().max() <= 1
    as_bool = {k: v.bool() if k != "frames" else v for k, v in c.items()}
    assert torch.equal(g(**as_bool)["inpainted"], out["inpainted"])


def test_generator_reads_propagated_frames():
    g = OcclusionAwareGenerator(GeneratorConfig(**TINY, use_propagated=True))
    c = clip(1, 2, 8, 8)
    a = g(**c, propagated=torch.zeros(1, 3, 2, 8, 8))["raw"]
    b = g(**c, propagated=torch.ones(1, 3, 2, 8, 8))["raw"]
    assert a.shape == (1, 3, 2, 8, 8) and not torch.allclose(a, b)
    with pytest.raises(InputError, match="propagated"):
        g(**c)


@pytest.mark.parametrize("n,dilations", [(1, (1,)), (2, ())])
def test_temporal_receptive_field(n, dilations):
    torch.manual_seed(0)
    g = OcclusionAwareGenerator(GeneratorConfig(channels=8, temporal_range=n, stage_blocks=0,
                                                dilations=dilations, mask_hidden=4)).double()
    layers = 5 + 2 * len(dilations)
    r = g.temporal_receptive_field
    assert r == layers * n
    t, mid = 2 * r + 5, r + 2
    c = {k: v.double() for k, v in clip(1, t, 8, 8).items()}
    base = g(**c)["raw"]
    for key in c:  # every input channel of frame `mid` (a shifted block may carry any one of them)
        c[key] = c[key].clone()
        c[key][:, :, mid] = c[key][:, :, mid] + 1.0 if key == "frames" else 1 - c[key][:, :, mid]
    change = (g(**c)["raw"] - base).abs().amax(dim=(0, 1, 3, 4))
    inside = torch.zeros(t, dtype=torch.bool)
    inside[mid - r:mid + r + 1] = True
    assert torch.all(change[~inside] == 0), change
    assert change[mid - r] > 0 and change[mid + r] > 0, change  # the range is reached, not only bounded


def test_generator_autocast_bfloat16_on_cpu():
    g = OcclusionAwareGenerator(GeneratorConfig(**TINY))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = g(**clip(1, 2, 8, 8))
    assert out["raw"].shape == (1, 3, 2, 8, 8) and torch.isfinite(out["raw"].float()).all()
    assert out["raw"].dtype == torch.bfloat16


@pytest.mark.parametrize("key,shape,message", [
    ("frames", (1, 4, 3, 8, 8), "frames must be"),
    ("visible", (1, 1, 2, 8, 8), "visible mask has T=2"),
    ("occluded", (1, 1, 3, 12, 8), "occluded mask has H=12"),
    ("amodal", (1, 1, 3, 8, 4), "amodal mask has W=4"),
    ("amodal", (1, 2, 3, 8, 8), "amodal mask must be"),
    ("visible", (2, 1, 3, 8, 8), "visible mask has B=2"),
])
def test_generator_bad_input(key, shape, message):
    g = OcclusionAwareGenerator(GeneratorConfig(**TINY))
    c = clip(1, 3, 8, 8)
    c[key] = torch.zeros(shape)
    with pytest.raises(InputError, match=message):
        g(**c)


def test_generator_bad_size_and_config():
    g = OcclusionAwareGenerator(GeneratorConfig(**TINY))
    with pytest.raises(InputError, match="multiples of 4"):
        g(**clip(1, 2, 10, 8))
    with pytest.raises(InputError, match="propagated"):
        g(**clip(1, 2, 8, 8), propagated=torch.zeros(1, 3, 2, 8, 8))
    with pytest.raises(InputError, match="unknown keys"):
        GeneratorConfig.from_dict({"chanels": 8})
    assert GeneratorConfig.from_dict({"dilations": [1, 2]}).dilations == (1, 2)
