"""The STTN-like baseline: patch attention against a loop by hand, shapes, the input outside the hole
kept bit for bit, nothing read from the hole's pixels, attention across every frame of the clip,
hole keys masked out, capacity, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from instseg.errors import InputError
from instseg.video.voin.generator import GeneratorConfig, OcclusionAwareGenerator
from instseg.video.voin.sttn import STTNConfig, STTNInpainter, patch_attention, patch_image, patch_tokens

SMALL = STTNConfig(channels=6, blocks=1, patch_sizes=(1, 2, 4))


def clip(b: int = 1, t: int = 4, h: int = 32, w: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    """A rectangle-shaped target whose right part is the hole, on random frames."""
    g = torch.Generator().manual_seed(seed)
    amodal = torch.zeros(b, 1, t, h, w)
    amodal[..., 4:28, 6:26] = 1
    occluded = torch.zeros_like(amodal)
    occluded[..., 4:28, 16:26] = 1
    return {"frames": torch.rand(b, 3, t, h, w, generator=g) * 2 - 1, "visible": amodal - occluded,
            "occluded": occluded, "amodal": amodal}


def model(cfg: STTNConfig = SMALL, seed: int = 0) -> STTNInpainter:
    torch.manual_seed(seed)
    return STTNInpainter(cfg).eval()


def test_patch_tokens_round_trip_and_order():
    x = torch.arange(2 * 3 * 2 * 4 * 6, dtype=torch.float32).reshape(2, 3, 2, 4, 6)
    tokens = patch_tokens(x, 2)
    assert tokens.shape == (2, 2 * 2 * 3, 3 * 4)
    # token 4 = frame 0, patch row 1, patch column 1; its first values: channel 0's 2 x 2 patch
    assert torch.equal(tokens[0, 4, :4], x[0, 0, 0, 2:4, 2:4].reshape(-1))
    assert torch.equal(tokens[1, 6, 4:8], x[1, 1, 1, 0:2, 0:2].reshape(-1))  # frame 1, patch (0, 0), channel 1
    assert torch.equal(patch_image(tokens, 2, tuple(x.shape)), x)


def attention_by_hand(q, k, v, p, keep=None):
    b, c, t, h, w = q.shape
    out = torch.zeros_like(q)
    cells = [(f, i, j) for f in range(t) for i in range(0, h, p) for j in range(0, w, p)]
    for n in range(b):
        vec = {name: torch.stack([x[n, :, f, i:i + p, j:j + p].reshape(-1) for f, i, j in cells])
               for name, x in (("q", q), ("k", k), ("v", v))}
        scores = vec["q"] @ vec["k"].T / math.sqrt(c * p * p)
        if keep is not None and keep[n].any():
            scores[:, ~keep[n]] = -math.inf
        mixed = scores.softmax(dim=-1) @ vec["v"]
        for (f, i, j), row in zip(cells, mixed):
            out[n, :, f, i:i + p, j:j + p] = row.reshape(c, p, p)
    return out


@pytest.mark.parametrize("p", [1, 2, 4])
def test_patch_attention_by_hand(p):
    g = torch.Generator().manual_seed(p)
    q, k, v = (torch.randn(2, 3, 3, 4, 8, generator=g, dtype=torch.float64) for _ in range(3))
    tokens = 3 * (4 // p) * (8 // p)
    keep = torch.rand(2, tokens, generator=g) > 0.4
    keep[1] = False  # a clip whose every key is hole attends to all of them
    torch.testing.assert_close(patch_attention(q, k, v, p), attention_by_hand(q, k, v, p))
    torch.testing.assert_close(patch_attention(q, k, v, p, keep), attention_by_hand(q, k, v, p, keep))


def test_shapes_and_input_kept_outside_the_hole():
    x = clip(b=2, t=3, h=32, w=48)
    out = model()(**x)
    assert out["raw"].shape == out["inpainted"].shape == (2, 3, 3, 32, 48)
    assert out["raw"].abs().max() <= 1
    outside = x["occluded"].expand_as(x["frames"]) == 0
    assert torch.equal(out["inpainted"][outside], x["frames"][outside])
    inside = ~outside
    assert torch.equal(out["inpainted"][inside], out["raw"][inside])
    bools = model()(x["frames"], x["visible"].bool(), x["occluded"].bool(), x["amodal"].bool())
    assert torch.equal(bools["inpainted"], out["inpainted"])


def test_no_information_from_the_hole_pixels():
    x = clip(t=3)
    net = model()
    base = net(**x)["raw"]
    hole = x["occluded"].expand_as(x["frames"]).bool()
    changed = dict(x, frames=torch.where(hole, torch.rand_like(x["frames"]) * 2 - 1, x["frames"]))
    assert torch.equal(net(**changed)["raw"], base)
    frames = x["frames"].clone().requires_grad_(True)
    net(**dict(x, frames=frames))["raw"].square().sum().backward()
    assert frames.grad[hole].abs().max() == 0
    assert frames.grad[~hole].abs().max() > 0


@pytest.mark.parametrize("patch_sizes", [(1, 2, 4), (4, 2, 1)])
def test_every_frame_reads_every_other_frame(patch_sizes):
    """One block of patch attention: frame 0's fill depends on the last frame's known pixels and
    the reverse, at any distance (a TSM layer reaches only its neighbours)."""
    x = clip(t=6)
    net = model(STTNConfig(channels=6, blocks=1, patch_sizes=patch_sizes))
    frames = x["frames"].clone().requires_grad_(True)
    out = net(**dict(x, frames=frames))["raw"]
    known = (x["occluded"] == 0).expand_as(frames)
    for target, source in ((0, 5), (5, 0), (2, 3)):
        grad, = torch.autograd.grad(out[:, :, target].sum(), frames, retain_graph=True)
        assert grad[:, :, source][known[:, :, source]].abs().max() > 1e-8, (target, source)


def test_hole_keys_are_not_attended():
    """With every patch of the last frame mostly hole, nothing of it reaches the other frames
    (STTN's key masking) unless masking is off."""
    x = clip(t=3)
    x["occluded"][:, :, 2] = 1
    x["visible"][:, :, 2] = 0
    x["amodal"][:, :, 2] = 1
    for fraction, reaches in ((0.5, False), (None, True)):
        net = model(STTNConfig(channels=6, blocks=1, patch_sizes=(1, 2, 4), key_hole_fraction=fraction))
        amodal = x["amodal"].clone().requires_grad_(True)  # the only input of frame 2 the net reads
        out = net(**dict(x, amodal=amodal))["raw"]
        grad, = torch.autograd.grad(out[:, :, 0].sum(), amodal)
        assert (grad[:, :, 2].abs().max() > 0) == reaches, fraction


def test_all_hole_clip_is_finite():
    x = clip(t=2)
    x["occluded"][:] = 1
    out = model()(**x)
    assert torch.isfinite(out["raw"]).all()


def test_parameter_counts_against_voin_generator():
    """The capacity figures of the module docstring: not matched at the default, 6 blocks match."""
    gen = OcclusionAwareGenerator(GeneratorConfig(channels=12))
    gen_count = sum(p.numel() for p in gen.parameters())
    assert STTNInpainter().parameter_count() == 165_831 and gen_count == 424_719
    six = STTNInpainter(STTNConfig(blocks=6)).parameter_count()
    assert six == 443_463 and abs(six / gen_count - 1) < 0.05


def test_config_from_dict_and_checks():
    cfg = STTNConfig.from_dict({"channels": 4, "patch_sizes": [1, 2], "blocks": 3})
    assert cfg == STTNConfig(channels=4, patch_sizes=(1, 2), blocks=3)
    with pytest.raises(InputError, match="unknown keys"):
        STTNConfig.from_dict({"heads": 3})
    for bad, message in (({"channels": 4, "patch_sizes": (1, 2, 4)}, "does not split into 3 heads"),
                         ({"patch_sizes": (0, 2, 4)}, "patch sizes must be >= 1"),
                         ({"blocks": 0}, "blocks >= 1"),
                         ({"key_hole_fraction": 1.5}, "key_hole_fraction")):
        with pytest.raises(InputError, match=message):
            STTNConfig.from_dict(bad)


def test_bad_inputs():
    net = model()
    x = clip()
    with pytest.raises(InputError, match="uses no flow"):
        net(**x, propagated=x["frames"])
    with pytest.raises(InputError, match=r"frames must be \[B, 3, T, H, W\]"):
        net(**dict(x, frames=x["frames"][:, :2]))
    with pytest.raises(InputError, match="occluded mask has T=3"):
        net(**dict(x, occluded=x["occluded"][:, :, :3]))
    with pytest.raises(InputError, match="multiples of 4"):
        net(**clip(h=30, w=32))
    with pytest.raises(InputError, match="patches of 4 feature cells"):
        net(**clip(h=24, w=32))  # a 6 x 8 feature map: patches of 1 and 2 fit, 4 does not
