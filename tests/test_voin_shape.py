"""VOIN shape completion (section 5.4.1): model shapes, the class path, the loss and its gradient,
the baselines, the metrics by hand, cropping and training through the engine on synthetic clips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instseg.errors import InputError
from instseg.video.voin.shape import ShapeCompletion, ShapeConfig, shape_loss
from instseg.video.voin.shape_baselines import convex_hull_baseline, visible_baseline
from instseg.video.voin.shape_metrics import pool_scores, shape_scores
from instseg.video.voin.shape_training import (ShapeClip, ShapeTraining, augment, clip_box, crop_masks,
                                               evaluate_shape, paste_logits, train_shape)

TINY = ShapeConfig(channels=12, patch_sizes=(1, 2), layers=1, ffn_channels=12, decoder_channels=8, class_dim=4,
                   fusion_layers=1)


def disc_clip(t: int = 4, size: int = 32, r: float = 7.0, label: int = 1, seed: int = 0) -> ShapeClip:
    """A disc moving right, a horizontal band across its middle hidden in every frame."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy = size / 2 + rng.uniform(-2, 2)
    amodal = np.stack([(yy - cy) ** 2 + (xx - 10 - k) ** 2 <= r * r for k in range(t)])
    occluder = np.zeros_like(amodal)
    band = int(cy) + int(rng.integers(-1, 2))
    occluder[:, band - 2:band + 2, :] = True
    return ShapeClip(amodal & ~occluder, amodal, amodal & occluder, label, f"disc{seed}")


@pytest.mark.parametrize("t,h,w", [(1, 16, 16), (3, 24, 40), (5, 37, 29)])
def test_output_shape_for_any_length_and_size(t, h, w):
    torch.manual_seed(0)
    model = ShapeCompletion(TINY)
    out = model(torch.rand(2, t, h, w) > 0.5, torch.tensor([0, 3]))
    assert out.shape == (2, t, h, w) and torch.isfinite(out).all()


def test_attention_mixes_frames():
    """Changing one frame's visible mask changes the other frames' logits (attention across frames)."""
    torch.manual_seed(0)
    model = ShapeCompletion(TINY).eval()
    vis = torch.zeros(1, 3, 16, 16)
    vis[:, :, 4:12, 4:12] = 1
    other = vis.clone()
    other[0, 2] = 0
    with torch.no_grad():
        a, b = model(vis, torch.tensor([1])), model(other, torch.tensor([1]))
    assert (a[0, 0] - b[0, 0]).abs().max() > 1e-6


def test_class_embedding_changes_the_output_only_on_the_visible_mask_path():
    torch.manual_seed(0)
    model = ShapeCompletion(TINY).eval()
    vis = torch.zeros(1, 2, 16, 16)
    vis[:, :, 5:11, 5:11] = 1
    with torch.no_grad():
        a, b = model(vis, torch.tensor([1])), model(vis, torch.tensor([2]))
        assert (a - b).abs().max() > 1e-4
        model.class_embedding.weight.zero_()  # no class signal: the class cannot matter
        a, b = model(vis, torch.tensor([1])), model(vis, torch.tensor([2]))
        assert torch.equal(a, b)
        empty = torch.zeros_like(vis)  # semantics = embedding x visible: nothing visible, no class signal
        model.class_embedding.weight.normal_()
        assert torch.equal(model(empty, torch.tensor([1])), model(empty, torch.tensor([2])))


def test_loss_by_hand_and_invisible_term():
    logits = torch.zeros(1, 1, 1, 2)
    amodal = torch.tensor([[[[1.0, 0.0]]]])
    assert shape_loss(logits, amodal)["loss_amodal"].item() == pytest.approx(np.log(2))
    logits = torch.tensor([[[[2.0, -1.0]]]])
    visible = torch.tensor([[[[1.0, 0.0]]]])
    losses = shape_loss(logits, amodal, visible, invisible_weight=0.5)
    bce0, bce1 = np.log1p(np.exp(-2.0)), np.log1p(np.exp(-1.0))  # target 1 at logit 2, target 0 at logit -1
    assert losses["loss_amodal"].item() == pytest.approx((bce0 + bce1) / 2, rel=1e-5)
    assert losses["loss_invisible"].item() == pytest.approx(0.5 * bce1, rel=1e-5)


def test_loss_decreases_on_a_tiny_overfit_and_reaches_every_part():
    torch.manual_seed(0)
    model = ShapeCompletion(TINY)
    clips = [disc_clip(seed=s) for s in range(2)]
    vis = torch.tensor(np.stack([c.visible for c in clips]), dtype=torch.float32)
    amodal = torch.tensor(np.stack([c.amodal for c in clips]), dtype=torch.float32)
    labels = torch.tensor([1, 1])
    loss = shape_loss(model(vis, labels), amodal)["loss_amodal"]
    loss.backward()
    for part in ("encoder", "layers", "decoder", "class_embedding", "fusion"):
        grads = [p.grad for p in getattr(model, part).parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0, part
    attention = model.layers[0].attention
    assert attention.qkv.weight.grad.abs().sum() > 0 and attention.merge.weight.grad.abs().sum() > 0
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = loss.item()
    for _ in range(40):
        opt.zero_grad()
        loss = shape_loss(model(vis, labels), amodal)["loss_amodal"]
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_bad_input_is_an_input_error():
    model = ShapeCompletion(TINY)
    with pytest.raises(InputError, match=r"\(B, T, H, W\)"):
        model(torch.zeros(2, 16, 16), torch.tensor([1, 1]))
    with pytest.raises(InputError, match="labels"):
        model(torch.zeros(2, 3, 16, 16), torch.tensor([1]))
    with pytest.raises(InputError, match="0..10"):
        model(torch.zeros(1, 3, 16, 16), torch.tensor([11]))
    with pytest.raises(InputError, match="do not match"):
        shape_loss(torch.zeros(1, 3, 8, 8), torch.zeros(1, 2, 8, 8))
    with pytest.raises(InputError, match="disc0"):  # a clip whose mask counts differ names itself
        c = disc_clip()
        ShapeClip(c.visible, c.amodal[:2], c.occluded, 1, "disc0")
    with pytest.raises(InputError, match="one shape"):
        shape_scores(np.zeros((3, 4, 4)), np.zeros((2, 4, 4)), np.zeros((3, 4, 4)), np.zeros((3, 4, 4)))
    with pytest.raises(InputError, match=r"\(T, H, W\)"):
        convex_hull_baseline(np.zeros((4, 4)))
    with pytest.raises(InputError, match="unknown"):
        ShapeConfig.from_dict({"layer": 3})
    with pytest.raises(InputError, match="divide"):
        ShapeConfig.from_dict({"channels": 10, "patch_sizes": [1, 2, 4]})
    assert ShapeConfig.from_dict({"layers": 8, "patch_sizes": [1, 2]}).patch_sizes == (1, 2)
    with pytest.raises(InputError, match="crop_size"):
        ShapeTraining.from_dict({"crop_size": 4})


def test_convex_hull_baseline_contains_visible_and_fills_a_notch():
    vis = np.zeros((2, 7, 7), bool)
    vis[0, 1:6, 1:6] = True
    vis[0, 2:4, 3:6] = False  # a notch cut into the square's right side
    hull = convex_hull_baseline(vis)
    expected = np.zeros((7, 7), bool)
    expected[1:6, 1:6] = True
    np.testing.assert_array_equal(hull[0], expected)
    assert not hull[1].any()  # an empty frame stays empty
    rng = np.random.default_rng(0)
    blobs = rng.random((3, 12, 12)) > 0.7
    assert (convex_hull_baseline(blobs) >= blobs).all()
    np.testing.assert_array_equal(visible_baseline(blobs), blobs)


def test_iou_and_invisible_iou_by_hand():
    amodal = np.zeros((2, 1, 4), bool)
    amodal[:, 0, :] = True  # 4 pixels; the right two are hidden in frame 0, nothing in frame 1
    visible = amodal.copy()
    visible[0, 0, 2:] = False
    occluded = amodal & ~visible
    pred = np.zeros_like(amodal)
    pred[0, 0, :3] = True  # frame 0: completes one of the two hidden pixels
    pred[1, 0, :] = True  # frame 1: exact
    s = shape_scores(pred, amodal, visible, occluded)
    np.testing.assert_allclose(s.frame_iou, [3 / 4, 1.0])
    assert s.frame_invisible_iou[0] == pytest.approx(1 / 2)
    assert np.isnan(s.frame_invisible_iou[1])  # nothing hidden, nothing predicted there: undefined
    assert s.video_iou == pytest.approx(7 / 8)  # (3 + 4) / (4 + 4)
    assert s.video_invisible_iou == pytest.approx(1 / 2)
    # a second object: hallucinates one pixel in an unoccluded frame -> invisible IoU 0 there,
    # but that frame has no occluded part, so it stays out of the invisible mean
    pred2 = amodal.copy()
    pred2[0, 0, 2:] = False
    s2 = shape_scores(pred2, amodal, visible, occluded)
    np.testing.assert_allclose(s2.frame_iou, [1 / 2, 1.0])
    assert s2.frame_invisible_iou[0] == 0.0
    pooled = pool_scores([s, s2])
    assert pooled["iou"] == pytest.approx((3 / 4 + 1 + 1 / 2 + 1) / 4)  # mean of per-frame IoUs
    assert pooled["invisible_iou"] == pytest.approx((1 / 2 + 0) / 2)
    assert pooled["video_iou"] == pytest.approx((7 / 8 + 6 / 8) / 2)  # mean over objects of sum/sum
    assert pooled["occluded_frames"] == 2 and pooled["frames"] == 4
    empty = np.zeros((1, 2, 2), bool)
    assert np.isnan(pool_scores([shape_scores(empty, empty, empty, empty)])["invisible_iou"])


def test_crop_and_paste_round_trip_and_augment_is_invertible():
    clip = disc_clip(t=3, size=40)
    box = clip_box(clip.visible, 0.25)
    assert box[2] >= 8
    crop = crop_masks(clip.amodal, box, 32)
    assert crop.shape == (3, 32, 32) and 0 <= crop.min() and crop.max() <= 1
    back = paste_logits(torch.logit(crop.clamp(1e-4, 1 - 1e-4)), box, (40, 40)) > 0
    inter, union = (back.numpy() & clip.amodal).sum(), (back.numpy() | clip.amodal).sum()
    assert inter / union > 0.9
    edge = np.zeros((1, 10, 10), bool)
    edge[0, 0:3, 0:3] = True  # a box reaching past the frame's corner
    b = clip_box(edge, 0.5)
    assert b[0] < 0 and b[1] < 0
    assert crop_masks(edge, b, 8).sum() > 0
    assert paste_logits(torch.zeros(1, 8, 8), b, (10, 10)).shape == (1, 10, 10)
    x = torch.arange(2 * 3 * 3.0).view(2, 3, 3)
    for code in range(16):
        y = augment(x, code)
        assert sorted(y.flatten().tolist()) == sorted(x.flatten().tolist())
    assert not torch.equal(augment(x, 4), x) and torch.equal(augment(augment(x, 8), 8), x)


def test_training_through_the_engine_and_evaluation():
    train = [disc_clip(seed=s, label=1 + s % 2) for s in range(6)]
    val = [disc_clip(seed=10 + s) for s in range(2)]
    setup = ShapeTraining(iters=12, clips_per_batch=2, crop_size=16, lr=3e-3, val_clips=2)
    run = train_shape(setup, TINY, train, val, seed=0)
    assert len(run.val_curve) == 12 and run.val_curve[-1][1] < run.val_curve[0][1]
    assert run.plateau.phase_improvement is not None and run.sec_per_iter > 0
    again = train_shape(setup, TINY, train, val, seed=0)  # a seed fixes the run
    assert again.val_curve == run.val_curve
    scores = evaluate_shape(run.model, val, setup)
    assert set(scores) == {"model", "visible", "convex_hull", "crop_oracle"}
    assert scores["visible"]["invisible_iou"] == 0.0 and scores["convex_hull"]["invisible_iou"] > 0
    assert scores["crop_oracle"]["iou"] > 0.85 and 0.0 <= scores["model"]["iou"] <= 1.0
