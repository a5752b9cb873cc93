"""VOIN flow completion: exact-flow targets of a hand-made scene, DIS on a translated texture, the
residual U-Net, each loss term by hand, gradients of every term, a short engine run and the
evaluation, bad input. Tiny synthetic inputs only (no benchmark is built)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from instseg.data.appearance import draw_appearance
from instseg.errors import InputError
from instseg.evaluation.inpainting import warp_back
from instseg.video.data.occluded_shapes_vis.render import amodal_mask, render_frame, track
from instseg.video.voin.data.samples import VoiSample
from instseg.video.voin.flow import (
    LOSS_TERMS,
    FlowClip,
    FlowCompletionConfig,
    FlowCompletionNet,
    FlowItems,
    complete_flows,
    completion_losses,
    contour_smoothness_loss,
    evaluate_flow,
    flow_clip,
    gradient_loss,
    l1_flow_loss,
    laplacian_loss,
    laplacian_pyramid,
    train_flow_completion,
    warp,
    warping_loss,
)
from instseg.video.voin.flow_targets import clean_scene, dis_flow, exact_flows, initial_flows, sample_flows

SIZE, STEP = 48, (3.0, 2.0)  # frame size; the target square's displacement per frame (dx, dy)


def _scene(length: int = 3, size: int = SIZE) -> dict:
    """Two objects: the target square (track 1) moving by STEP a frame, and a disc (track 2) in front
    of it, still; the camera pans (-1, 0) then (0, -2) px."""
    rng = np.random.default_rng(0)
    look = lambda: vars(draw_appearance(rng)).copy()  # noqa: E731
    square = [[14 + STEP[0] * t, 16 + STEP[1] * t, 0.0, 7.0, 1.0, 1.0, 0.0] for t in range(length)]
    disc = [[22.0, 22.0, 0.0, 5.0, 2.0, 1.0, 0.0] for _ in range(length)]
    camera = [[4 + min(t, 1), 6 - 2 * max(t - 1, 0)] for t in range(length)]
    return {"height": size, "width": size, "length": length, "camera": camera,
            "background": {"kind": "clutter", "seed": 5, "height": size + 16, "width": size + 16},
            "noise": {"seed": 1, "std": 0.01},
            "objects": [{"track_id": 1, "shape": "square", "aspect": 1.0, "look": look(), "frames": square},
                        {"track_id": 2, "shape": "disc", "aspect": 1.0, "look": look(), "frames": disc}]}


def _sample(scene: dict, track_id: int = 1) -> VoiSample:
    n = scene["length"]
    frames = np.stack([render_frame(scene, t) for t in range(n)])
    amodal = np.stack([amodal_mask(scene, track(scene, track_id), t) for t in range(n)])
    other = np.stack([amodal_mask(scene, track(scene, 2), t) for t in range(n)])
    return VoiSample(frames, frames.copy(), amodal, amodal & other, other, amodal & ~other,
                     {"kind": "natural", "video_id": 7, "track_id": track_id, "start": 0, "length": n})


# ------------------------------------------------------------------------------- flow targets

def test_exact_flow_is_the_hand_moved_squares_displacement():
    scene = _scene()
    sample = _sample(scene)
    assert sample.occluded.any()  # the disc hides part of the square
    flows = sample_flows(sample, {7: scene})
    for k in range(2):
        inside, outside = sample.amodal[k], ~sample.amodal[k] & ~amodal_mask(scene, track(scene, 2), k)
        np.testing.assert_allclose(flows["forward"][k][inside], np.broadcast_to(STEP, (inside.sum(), 2)), atol=1e-4)
        # hidden part included: the clean scene has the target in front
        assert sample.occluded[k].any() and np.allclose(flows["forward"][k][sample.occluded[k]], STEP, atol=1e-4)
        back = sample.amodal[k + 1]
        np.testing.assert_allclose(flows["backward"][k][back], np.broadcast_to((-3.0, -2.0), (back.sum(), 2)),
                                   atol=1e-4)
        pan = scene["camera"][k][0] - scene["camera"][k + 1][0], scene["camera"][k][1] - scene["camera"][k + 1][1]
        np.testing.assert_allclose(flows["forward"][k][outside], np.broadcast_to(pan, (outside.sum(), 2)))
    # the source scene (disc in front) gives the disc's (zero) motion on the hidden part instead
    raw = exact_flows(scene, 0, 3)["forward"][0]
    assert np.abs(raw[sample.occluded[0]]).max() < 1e-4


def test_exact_flow_bad_input():
    scene = _scene()
    sample = _sample(scene)
    with pytest.raises(InputError, match="no scene"):
        sample_flows(sample, {8: scene})
    moved = _sample(scene)
    moved.amodal[1] = np.roll(moved.amodal[1], 1, axis=1)
    with pytest.raises(InputError, match="amodal"):
        clean_scene(moved, {7: scene})
    with pytest.raises(InputError, match="scene is"):
        clean_scene(_sample(_scene(size=40)), {7: scene})
    with pytest.raises(InputError, match="outside"):
        clean_scene(VoiSample(*(np.concatenate([a, a]) for a in (sample.corrupted, sample.clean, sample.amodal,
                                                                  sample.occluded, sample.occluder, sample.visible)),
                              meta=sample.meta), {7: scene})


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, size=(h // 4, w // 4, 3)).astype(np.float32)
    return np.clip(cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


def test_dis_recovers_a_translation_within_half_a_pixel():
    big = _texture(112, 112)
    a, b = big[8:104, 8:104], big[7:103, 5:101]  # b(x + 3, y + 1) = a(x, y)
    flow = dis_flow(a, b)
    inner = flow[16:-16, 16:-16].reshape(-1, 2)
    assert np.abs(inner.mean(0) - (3.0, 1.0)).max() < 0.5
    back = initial_flows(np.stack([a, b]))["backward"][0][16:-16, 16:-16].reshape(-1, 2)
    assert np.abs(back.mean(0) - (-3.0, -1.0)).max() < 0.5
    with pytest.raises(InputError):
        dis_flow(a, b[:-1])
    with pytest.raises(InputError):
        initial_flows(a[None])


# -------------------------------------------------------------------------------------- model

def _batch(n: int = 2, h: int = 16, w: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    amodal = torch.zeros(n, 2, h, w)
    amodal[:, :, 4:12, 4:12] = 1.0
    visible = amodal.clone()
    visible[:, :, 4:8, 4:8] = 0.0
    return {"frames": torch.rand(n, 6, h, w, generator=g), "clean": torch.rand(n, 6, h, w, generator=g),
            "init": 2 * torch.randn(n, 2, h, w, generator=g), "gt": 2 * torch.randn(n, 2, h, w, generator=g),
            "visible": visible, "amodal": amodal, "occluded": (amodal - visible)[:, :1],
            "warp_valid": torch.ones(n, 1, h, w)}


@pytest.mark.parametrize("warped_input", [False, True])
def test_zero_residual_returns_the_initial_flow(warped_input):
    model = FlowCompletionNet(FlowCompletionConfig(base_channels=4, depth=2, warped_input=warped_input))
    batch = _batch(h=14, w=18)  # not a multiple of 2**depth: padded inside, cropped back
    with torch.no_grad():
        out = model(batch)
        assert out["flow"].shape == (2, 2, 14, 18)
        assert not torch.equal(out["flow"], batch["init"])  # a non-zero residual changes it ...
        model.head.weight.zero_()
        model.head.bias.zero_()
        out = model(batch)
    assert torch.equal(out["residual"], torch.zeros_like(out["residual"]))
    assert torch.equal(out["flow"], batch["init"])  # ... and a zero residual returns Ō exactly


def test_model_input_mismatch_is_input_error():
    model = FlowCompletionNet(FlowCompletionConfig(base_channels=4, depth=2))
    batch = _batch()
    with pytest.raises(InputError, match="amodal"):
        model(dict(batch, amodal=batch["amodal"][:, :1]))
    with pytest.raises(InputError, match="init"):
        model(dict(batch, init=batch["init"][:, :, :8]))
    with pytest.raises(InputError, match="lacks"):
        model({k: v for k, v in batch.items() if k != "visible"})
    with pytest.raises(InputError, match="unknown"):
        FlowCompletionConfig.from_dict({"base_channel": 8})
    with pytest.raises(InputError, match="crop"):
        FlowCompletionConfig.from_dict({"crop": 60})


# ------------------------------------------------------------------------------------- losses

def test_l1_and_gradient_loss_by_hand():
    gt = torch.zeros(1, 2, 4, 5)
    pred = gt.clone()
    pred[0, 0] = 2.0  # dx off by 2 everywhere, dy exact
    assert l1_flow_loss(pred, gt).item() == pytest.approx(1.0)  # (2 + 0) / 2
    weight = torch.zeros(1, 1, 4, 5)
    weight[..., 0, 0] = 1.0
    pred[0, 1, 0, 0] = 4.0
    assert l1_flow_loss(pred, gt, weight).item() == pytest.approx(3.0)  # only pixel (0, 0): (2 + 4) / 2
    assert gradient_loss(torch.full_like(gt, 3.0), gt).item() == 0.0  # a constant offset has no gradient
    ramp = gt.clone()
    ramp[0, 0] = torch.arange(5.0)  # O_x = x: d/dx = 1 on channel 0, d/dy = 0
    assert gradient_loss(ramp, gt).item() == pytest.approx(0.25)  # 0.5 * (mean(1, 0) + 0)


def test_laplacian_pyramid_of_a_constant_is_zero():
    const = torch.full((1, 2, 16, 16), 1.5)
    levels = laplacian_pyramid(const, 3)
    assert len(levels) == 4 and [tuple(l.shape[-2:]) for l in levels] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    for band in levels[:-1]:
        assert band.abs().max().item() < 1e-6
    assert torch.allclose(levels[-1], torch.full_like(levels[-1], 1.5))
    gt = torch.randn(1, 2, 16, 16, generator=torch.Generator().manual_seed(1))
    # a constant error only shows in the low-pass residual: the loss is |c|
    assert laplacian_loss(gt + 0.5, gt, 3).item() == pytest.approx(0.5, abs=1e-5)
    impulse = gt.clone()
    impulse[0, 0, 8, 8] += 4.0
    assert laplacian_loss(impulse, gt, 3).item() > laplacian_loss(gt + 4.0 / 256, gt, 3).item()
    assert laplacian_loss(gt, gt, 3).item() == 0.0


def test_warp_matches_warp_back_and_warping_loss_is_zero_for_a_consistent_pair():
    tex = _texture(40, 40).astype(np.float32) / 255.0
    a, b = tex[4:36, 4:36], tex[3:35, 2:34]  # b(x + 2, y + 1) = a(x, y)
    ta = torch.from_numpy(a.transpose(2, 0, 1).copy())[None]
    tb = torch.from_numpy(b.transpose(2, 0, 1).copy())[None]
    flow = torch.zeros(1, 2, 32, 32)
    flow[:, 0], flow[:, 1] = 2.0, 1.0
    assert warping_loss(flow, ta, tb).item() < 1e-6
    assert warping_loss(flow + 0.5, ta, tb).item() > 1e-3  # a wrong flow is penalised
    rand = torch.randn(1, 2, 32, 32, generator=torch.Generator().manual_seed(2)).double()
    warped, inside = warp(tb.double(), rand)
    ref, ref_inside = warp_back(b.astype(np.float64), rand[0].numpy().transpose(1, 2, 0))
    np.testing.assert_allclose(warped[0].numpy().transpose(1, 2, 0), ref, atol=1e-10)
    assert np.array_equal(inside[0, 0].numpy().astype(bool), ref_inside)


def test_contour_smoothness_penalises_gradients_inside_the_object_not_on_its_contour():
    amodal = torch.zeros(1, 1, 12, 12)
    amodal[..., 3:9, 3:9] = 1.0
    on_contour = torch.where(amodal.bool(), torch.tensor(2.0), torch.tensor(-1.0)).expand(1, 2, 12, 12)
    inside_step = torch.zeros(1, 2, 12, 12)
    inside_step[..., :, 6:] = 3.0  # the same step size, but at column 6, inside the object
    assert contour_smoothness_loss(on_contour, amodal).item() == 0.0
    penalised = contour_smoothness_loss(inside_step, amodal).item()
    # 6 x-pairs of 60 in-object pairs (30 x + 30 y) step by 3 on both channels: 3 * 6 / 60
    assert penalised == pytest.approx(0.3)
    outside_step = torch.zeros(1, 2, 12, 12)
    outside_step[..., :, 11:] = 3.0  # outside the object: free
    assert contour_smoothness_loss(outside_step, amodal).item() == 0.0


def test_every_loss_term_reaches_the_generator():
    cfg = FlowCompletionConfig(base_channels=4, depth=2)
    torch.manual_seed(0)
    model = FlowCompletionNet(cfg)
    batch = _batch()
    losses = completion_losses(model(batch), batch, cfg)
    assert set(losses) == set(LOSS_TERMS)
    for name in LOSS_TERMS:
        model.zero_grad()
        completion_losses(model(batch), batch, cfg)[name].backward()
        first, head = model.enc[0][0].weight.grad, model.head.weight.grad
        assert first is not None and head is not None, name
        assert torch.isfinite(first).all() and first.abs().sum() > 0 and head.abs().sum() > 0, name


# ---------------------------------------------------------------------------- train / evaluate

def _clip(seed: int = 0) -> FlowClip:
    scene = _scene(length=4, size=32)
    scene["noise"]["seed"] = seed
    for obj in scene["objects"]:
        for f in obj["frames"]:
            f[0], f[1] = f[0] - 4, f[1] - 4
    return flow_clip(_sample(scene), {7: scene})


def test_short_engine_run_and_evaluation():
    cfg = FlowCompletionConfig(base_channels=4, depth=2, iters=4, batch_size=2, crop=16, val_items=4)
    train, val = [_clip(0)], [_clip(1)]
    items = FlowItems(train, cfg)
    assert len(items) == 6  # 3 pairs x 2 directions
    assert items.batch([0, 1], iteration=0)["frames"].shape == (2, 6, 16, 16)
    run = train_flow_completion(cfg, train, val)
    assert len(run.val_curve) >= 2 and all(np.isfinite(v) for _, v in run.val_curve)
    assert run.plateau.points >= 0 and set(run.final_loss) >= set(LOSS_TERMS)
    result = evaluate_flow(run.model, val)
    assert result["pairs"] == 6
    assert all(np.isfinite(result[k]) for k in ("dis_epe_object", "dis_epe_occluded", "model_epe_object",
                                                   "model_epe_occluded"))
    bare = FlowClip(val[0].sample, val[0].init)  # inference: no exact flow needed
    done = complete_flows(run.model, bare)
    assert done["forward"].shape == done["backward"].shape == val[0].init["forward"].shape
    with pytest.raises(InputError, match="exact"):
        evaluate_flow(run.model, [bare])
    with pytest.raises(InputError):
        FlowClip(val[0].sample, {"forward": val[0].init["forward"][:1], "backward": val[0].init["backward"]},
                 val[0].exact)
