"""Video-inpainting metrics: hand-computed cases and scikit-image as the reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from instseg.errors import InputError
from instseg.evaluation.inpainting import (composite, epe, inpainting_metrics, psnr, psnr_frames, region_psnr,
                                           region_ssim, ssim, ssim_frames, warp_back, warping_error)


def _video(seed: int, shape=(3, 72, 80, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _noisy(video: np.ndarray, seed: int, sigma: float = 20.0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, sigma, size=video.shape)
    return np.clip(video + noise, 0, 255).round().astype(np.uint8)


def test_psnr_of_a_uniform_error_is_20_log10_255_over_it():
    gt = np.full((2, 8, 8, 3), 100, dtype=np.uint8)
    assert psnr(gt + 5, gt) == pytest.approx(20 * math.log10(255 / 5), abs=1e-12)
    assert psnr(gt - 5, gt) == pytest.approx(20 * math.log10(255 / 5), abs=1e-12)  # no uint8 wrap-around


def test_psnr_is_the_mean_of_frames_and_matches_scikit_image():
    gt = _video(0)
    pred = _noisy(gt, 1)
    per_frame = [peak_signal_noise_ratio(g, p, data_range=255) for g, p in zip(gt, pred, strict=True)]
    assert psnr_frames(pred, gt) == pytest.approx(per_frame, abs=1e-10)
    assert psnr(pred, gt) == pytest.approx(np.mean(per_frame), abs=1e-10)
    assert psnr(pred.astype(np.float32), gt.astype(np.float32)) == pytest.approx(psnr(pred, gt), abs=1e-10)


def test_an_exact_frame_gives_inf_and_so_does_the_mean():
    gt = _video(2)
    pred = _noisy(gt, 3)
    pred[1] = gt[1]
    frames = psnr_frames(pred, gt)
    assert math.isinf(frames[1]) and np.isfinite(frames[[0, 2]]).all()
    assert psnr(pred, gt) == math.inf
    assert psnr(gt, gt) == math.inf


def test_composite_keeps_gt_outside_the_hole_and_pred_inside():
    gt, pred = _video(4), _video(5)
    hole = np.zeros(gt.shape[:3], dtype=bool)
    hole[:, 10:30, 20:50] = True
    out = composite(pred, gt, hole)
    assert out.shape == gt.shape
    np.testing.assert_array_equal(out[~hole], gt[~hole])
    np.testing.assert_array_equal(out[hole], pred[hole])
    one = composite(pred[0], gt[0], hole[0].astype(np.uint8))  # one frame, 0/1 mask
    np.testing.assert_array_equal(one, out[0])


def test_psnr_and_ssim_with_a_hole_score_the_composite():
    gt, pred = _video(6), _video(7)
    hole = np.zeros(gt.shape[:3], dtype=bool)
    hole[:, 20:40, 20:40] = True
    comp = composite(pred, gt, hole)
    assert psnr(pred, gt, hole) == psnr(comp, gt)
    assert ssim(pred, gt, hole) == ssim(comp, gt)


def test_ssim_matches_scikit_image_with_window_65_and_data_range_255():
    gt = _video(8)
    pred = _noisy(gt, 9)
    per_frame = [structural_similarity(p.astype(np.float64), g.astype(np.float64), data_range=255,
                                       channel_axis=-1, win_size=65) for p, g in zip(pred, gt, strict=True)]
    assert ssim_frames(pred, gt) == pytest.approx(per_frame, abs=1e-12)
    assert ssim(pred, gt) == pytest.approx(np.mean(per_frame), abs=1e-12)
    assert ssim(gt, gt) == pytest.approx(1.0)


def _gradient_video(frames: int = 2) -> np.ndarray:
    y, x = np.mgrid[0:72, 0:80]
    return np.stack([x * 3, y * 3, (x + y) * 1.5], axis=-1)[None].repeat(frames, 0).astype(np.uint8)


def test_the_ssim_window_is_a_parameter_and_changes_the_number():
    gt = _gradient_video()  # smooth content plus noise: the window matters
    pred = _noisy(gt, 11, sigma=10.0)
    win7 = [structural_similarity(p, g, data_range=255, channel_axis=-1, win_size=7)
            for p, g in zip(pred, gt, strict=True)]
    assert ssim(pred, gt, win_size=7) == pytest.approx(np.mean(win7), abs=1e-12)
    assert ssim(pred, gt) - ssim(pred, gt, win_size=7) > 0.1
    assert inpainting_metrics(pred, gt, np.ones(gt.shape[:3], bool), win_size=7)["ssim_win_size"] == 7


def test_frames_smaller_than_the_window_raise_and_bad_windows_too():
    small = _video(12, (2, 64, 100, 3))
    with pytest.raises(InputError, match="64x100, smaller than the SSIM window 65"):
        ssim(small, small)
    assert ssim(small, small, win_size=63) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="odd"):
        ssim(small, small, win_size=8)


def test_region_psnr_by_hand():
    gt = np.zeros((2, 10, 10, 3), dtype=np.uint8)
    pred = gt.copy()
    region = np.zeros((2, 10, 10), dtype=bool)
    region[0, :2, :5] = True  # 10 pixels of error 10 (frame 0)
    pred[0, :2, :5] = 10
    region[1, 5:, 5:] = True  # 25 pixels of error 6 (frame 1)
    pred[1, 5:, 5:] = 6
    pred[:, 9, 0] = 200  # outside the region: ignored
    expected = (20 * math.log10(255 / 10) + 20 * math.log10(255 / 6)) / 2
    assert region_psnr(pred, gt, region) == pytest.approx(expected, abs=1e-12)
    region[1] = False  # an empty frame is skipped
    assert region_psnr(pred, gt, region) == pytest.approx(20 * math.log10(255 / 10), abs=1e-12)
    with pytest.raises(InputError, match="region is empty"):
        region_psnr(pred, gt, np.zeros_like(region))


def test_region_ssim_is_the_ssim_map_mean_over_the_region():
    gt = _video(13, (2, 80, 96, 3))
    pred = _noisy(gt, 14)
    border = (65 - 1) // 2
    interior = np.zeros(gt.shape[:3], dtype=bool)
    interior[:, border:-border, border:-border] = True  # what scikit-image's scalar SSIM averages
    assert region_ssim(pred, gt, interior) == pytest.approx(ssim(pred, gt), abs=1e-12)
    region = np.zeros(gt.shape[:3], dtype=bool)
    region[:, 5:40, 10:70] = True
    maps = [structural_similarity(p.astype(float), g.astype(float), data_range=255, channel_axis=-1,
                                  win_size=65, full=True)[1] for p, g in zip(pred, gt, strict=True)]
    expected = np.mean([m[r].mean() for m, r in zip(maps, region, strict=True)])
    assert region_ssim(pred, gt, region) == pytest.approx(expected, abs=1e-12)
    metrics = inpainting_metrics(pred, gt, region, region=region)
    assert set(metrics) == {"psnr", "ssim", "ssim_win_size", "region_psnr", "region_ssim"}


def test_epe_of_a_constant_offset_3_4_is_5():
    gt = np.random.default_rng(15).normal(size=(2, 6, 7, 2))
    assert epe(gt + np.array([3.0, 4.0]), gt) == pytest.approx(5.0, abs=1e-12)
    assert epe(gt, gt) == 0.0


def test_epe_inside_a_mask_and_an_empty_mask_raises():
    gt = np.zeros((4, 4, 2))
    pred = gt.copy()
    pred[0, 0] = (6.0, 8.0)  # one pixel with error 10
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, :2] = True
    assert epe(pred, gt, mask) == pytest.approx(5.0)
    assert epe(pred, gt) == pytest.approx(10.0 / 16)
    with pytest.raises(InputError, match="mask is empty"):
        epe(pred, gt, np.zeros((4, 4), dtype=bool))


def _shifted_pair(dx: int, dy: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame 1 = frame 0 moved by (dx, dy); the forward flow is (dx, dy) everywhere."""
    frame0 = _video(16, (40, 50, 3))
    frame1 = np.roll(frame0, shift=(dy, dx), axis=(0, 1))
    flow = np.broadcast_to(np.array([dx, dy], dtype=np.float64), (1, 40, 50, 2))
    return np.stack([frame0, frame1]), flow


def test_warping_error_is_zero_for_an_integer_shift_and_its_flow():
    frames, flow = _shifted_pair(3, -2)
    assert warping_error(frames, flow) == pytest.approx(0.0, abs=1e-20)
    valid = np.ones((1, 40, 50), dtype=bool)
    valid[0, :10] = False
    assert warping_error(frames, flow, valid) == pytest.approx(0.0, abs=1e-20)


def test_warping_error_is_positive_for_a_wrong_flow_or_changed_content():
    frames, flow = _shifted_pair(3, -2)
    assert warping_error(frames, flow + 1.0) > 1e-3
    assert warping_error(frames, np.zeros_like(flow)) > 1e-3
    changed = frames.copy()
    changed[1, 20:30, 20:30] = 255 - changed[1, 20:30, 20:30]
    assert warping_error(changed, flow) > 1e-3


def test_warping_error_by_hand_on_half_pixel_flow():
    frames = np.zeros((2, 3, 4, 3), dtype=np.float64)
    frames[1, :, 1] = 255.0  # column 1 of frame 1 is white
    flow = np.zeros((1, 3, 4, 2))
    flow[..., 0] = 0.5  # bilinear: every sample is half of two columns
    warped, inside = warp_back(frames[1] / 255.0, flow[0])
    np.testing.assert_allclose(warped[:, :, 0], np.tile([0.5, 0.5, 0.0, 0.0], (3, 1)), atol=1e-12)
    np.testing.assert_array_equal(inside, np.tile([True, True, True, False], (3, 1)))
    # frame 0 is black: error 0.25 on 6 of the 9 inside pixels
    assert warping_error(frames, flow) == pytest.approx(0.25 * 6 / 9, abs=1e-12)


@pytest.mark.parametrize("call, message", [
    (lambda v: psnr(v, v[:, :10]), "must match"),
    (lambda v: psnr(v[..., :2], v[..., :2]), r"\[T, H, W, 3\]"),
    (lambda v: psnr(v.astype(float) * np.nan, v), "pred contains NaN"),
    (lambda v: psnr(v.astype(float) - 300, v), "0-255 scale"),
    (lambda v: composite(v, v, np.ones((3, 5, 5), bool)), "hole has shape"),
    (lambda v: composite(v, v, np.full(v.shape[:3], 2)), "boolean or 0/1"),
    (lambda v: region_ssim(v, v, np.ones((72, 81), bool)), "region has shape"),
    (lambda v: epe(np.zeros((4, 4, 3)), np.zeros((4, 4, 3))), r"\[\.\.\., H, W, 2\]"),
    (lambda v: epe(np.zeros((4, 4, 2)), np.full((4, 4, 2), np.nan)), "flow_gt contains NaN"),
    (lambda v: epe(np.zeros((4, 4, 2)), np.zeros((4, 5, 2))), "must match"),
    (lambda v: warping_error(v, np.zeros((3, 72, 80, 2))), "flows has shape"),
    (lambda v: warping_error(v[:1], np.zeros((0, 72, 80, 2))), ">= 2 frames"),
    (lambda v: warping_error(v, np.zeros((2, 72, 80, 2)), np.zeros((2, 72, 80), bool)), "no valid pixel"),
])
def test_bad_input_raises_input_error_naming_the_problem(call, message):
    with pytest.raises(InputError, match=message):
        call(_video(17))
