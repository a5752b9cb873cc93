"""VOIN flow-guided propagation: the forward-backward check, exact fills from a translated object,
nothing written outside the amodal region, nearest frames first, unfillable pixels reported, bad
input. A hand-made clip: a textured rectangle moving (+2, +1) px a frame over a noise background."""

from __future__ import annotations

import numpy as np
import pytest

from instseg.errors import InputError
from instseg.video.voin.propagation import consistency_error, propagate, reliable

L, H, W, STEP = 5, 24, 32, (2, 1)
OBJ = (4, 3, 12, 9)  # x0, y0, width, height of the object in frame 0


def _clip(gain: int = 0, seed: int = 0):
    """Frames (object colour = texture + gain·t), amodal masks, exact flows (object (+2, +1), still
    background), and the object-coordinate grid of each frame."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(40, 180, size=(OBJ[3], OBJ[2], 3))
    frames = rng.integers(0, 256, size=(L, H, W, 3)).astype(np.uint8)  # background noise, per frame
    amodal = np.zeros((L, H, W), dtype=bool)
    fw = np.zeros((L - 1, H, W, 2), dtype=np.float32)
    bw = np.zeros_like(fw)
    for t in range(L):
        x0, y0 = OBJ[0] + STEP[0] * t, OBJ[1] + STEP[1] * t
        amodal[t, y0:y0 + OBJ[3], x0:x0 + OBJ[2]] = True
        frames[t, y0:y0 + OBJ[3], x0:x0 + OBJ[2]] = texture + gain * t
    fw[amodal[:-1]] = STEP
    bw[amodal[1:]] = (-STEP[0], -STEP[1])
    return frames, amodal, fw, bw


def _object_hole(frames_with_hole: range, box=(3, 2, 4, 4)) -> np.ndarray:
    """A hole fixed in object coordinates (cols, rows of the object's texture) in the given frames."""
    hole = np.zeros((L, H, W), dtype=bool)
    for t in frames_with_hole:
        x0, y0 = OBJ[0] + STEP[0] * t + box[0], OBJ[1] + STEP[1] * t + box[1]
        hole[t, y0:y0 + box[3], x0:x0 + box[2]] = True
    return hole


def test_consistency_translation_reliable_and_occlusion_not():
    fw = np.zeros((H, W, 2))
    fw[..., 0] = 2.0
    bw = -fw
    error, inside = consistency_error(fw, bw)
    assert np.abs(error[inside]).max() < 1e-9 and not inside[:, -2:].any() and inside[:, :-2].all()
    assert np.array_equal(reliable(fw, bw), inside)
    bad = bw.copy()
    bad[8:12, 10:14, 0] = 4.0  # where frame 2's pixels came from elsewhere (an occlusion): 2 + 4 = 6 px
    rel = reliable(fw, bad)
    assert not rel[8:12, 8:12].any()  # x + 2 lands in the inconsistent patch
    assert rel[:8, :-2].all() and rel[12:, :-2].all()
    edge = bw.copy()
    edge[8:12, 10:14, 0] = 3.0  # exactly 5 px: not below the threshold
    assert not reliable(fw, edge)[8:12, 8:12].any()
    assert reliable(fw, edge, threshold=5.01)[8:12, 8:12].all()


def test_fills_a_hole_exactly_and_never_writes_outside_the_amodal_region():
    truth, amodal, fw, bw = _clip()
    hole = _object_hole(range(2, 3))
    hole[2, 0:3, 0:5] = True  # hole pixels outside the object: never written, not reported
    corrupted = truth.copy()
    corrupted[hole] = 0
    result = propagate(corrupted, hole, amodal, fw, bw)
    target = hole & amodal
    assert np.array_equal(result.filled, target) and not result.unfilled.any() and result.fill_rate == 1.0
    assert np.array_equal(result.frames[target], truth[target])  # exact colours
    assert np.array_equal(result.frames[~result.filled], corrupted[~result.filled])  # bit for bit elsewhere
    assert not (result.filled & ~amodal).any()
    assert np.array_equal(result.frames[2, 0:3, 0:5], corrupted[2, 0:3, 0:5])
    assert result.frames.dtype == np.uint8


def test_background_colours_never_leak_into_the_object():
    truth, amodal, fw, bw = _clip()
    # the hole touches the object's left edge; the flow there samples the background next to it in
    # frame 3 (the background does not move), which must not be used
    hole = _object_hole(range(2, 3), box=(0, 2, 3, 4))
    fw_bad = fw.copy()
    fw_bad[2][hole[2]] = (-1.0, 0.0)  # points at background pixels of frame 3
    bw_bad = bw.copy()
    corrupted = truth.copy()
    corrupted[hole] = 0
    result = propagate(corrupted, hole, amodal, fw_bad, bw_bad, threshold=50.0)
    # forward candidates land on background (unusable) -> only the backward pass fills, exactly
    assert np.array_equal(result.frames[hole], truth[hole])
    assert np.allclose(result.distance[hole], 1.0)
    # sub-pixel: frame 0's hole on the object's left columns, flow half a pixel short, so column 0
    # samples half background, half object: not filled (interpolation would mix the background in)
    edge = _object_hole(range(0, 1), box=(0, 2, 3, 4))
    fw_sub = fw.copy()
    fw_sub[0][edge[0]] = (STEP[0] - 0.5, STEP[1])
    result = propagate(np.where(edge[..., None], 0, truth).astype(np.uint8), edge, amodal, fw_sub, bw)
    col0 = edge & (np.arange(W) == OBJ[0])[None, None, :]
    assert col0.sum() == 4 and np.array_equal(result.unfilled, col0)
    assert result.filled[edge & ~col0].all()


def test_nearest_frame_first_and_ties_averaged():
    truth, amodal, fw, bw = _clip(gain=10)
    hole = _object_hole(range(2, 4))  # frames 2 and 3: frame 2 is 1 frame from frame 1, 2 from frame 4
    corrupted = truth.copy()
    corrupted[hole] = 0
    result = propagate(corrupted, hole, amodal, fw, bw)
    assert result.filled[hole].all()
    assert np.array_equal(result.frames[2][hole[2]].astype(int), truth[2][hole[2]].astype(int) - 10)  # frame 1's
    assert np.array_equal(result.frames[3][hole[3]].astype(int), truth[3][hole[3]].astype(int) + 10)  # frame 4's
    assert np.allclose(result.distance[hole], 1.0)
    single = _object_hole(range(2, 3))
    corrupted = truth.copy()
    corrupted[single] = 0
    tie = propagate(corrupted, single, amodal, fw, bw)  # frames 1 and 3 equally near: their mean
    assert np.array_equal(tie.frames[single], truth[single])


def test_chains_over_several_frames_and_reports_unfillable_pixels():
    truth, amodal, fw, bw = _clip()
    hole = _object_hole(range(0, 4))  # known only in frame 4: frame 0 is 4 flows away
    corrupted = truth.copy()
    corrupted[hole] = 0
    result = propagate(corrupted, hole, amodal, fw, bw)
    assert np.array_equal(result.frames[hole], truth[hole])
    assert np.allclose(result.distance[0][hole[0]], 4.0)
    everywhere = _object_hole(range(L))  # the same part hidden in every frame: nothing can fill it
    result = propagate(np.where(everywhere[..., None], 0, truth).astype(np.uint8), everywhere, amodal, fw, bw)
    assert not result.filled.any() and np.array_equal(result.unfilled, everywhere) and result.fill_rate == 0.0
    # an inconsistent flow is not followed: frame 2's hole, with both neighbours' checks broken
    single = _object_hole(range(2, 3))
    fw_bad, bw_bad = fw.copy(), bw.copy()
    fw_bad[2][single[2]] += 7.0
    bw_bad[1][single[2]] += 7.0
    result = propagate(np.where(single[..., None], 0, truth).astype(np.uint8), single, amodal, fw_bad, bw_bad)
    assert np.array_equal(result.unfilled, single)


def test_bad_input_is_input_error():
    truth, amodal, fw, bw = _clip()
    hole = _object_hole(range(2, 3))
    with pytest.raises(InputError, match="forward"):
        propagate(truth, hole, amodal, fw[:-1], bw)
    with pytest.raises(InputError, match="backward"):
        propagate(truth, hole, amodal, fw, bw[:, :-1])
    with pytest.raises(InputError, match="hole"):
        propagate(truth, hole[:-1], amodal, fw, bw)
    with pytest.raises(InputError, match="amodal"):
        propagate(truth, hole, amodal.astype(np.uint8), fw, bw, record="video 3")
    with pytest.raises(InputError, match="video 3"):
        propagate(truth[..., :2], hole, amodal, fw, bw, record="video 3")
    with pytest.raises(InputError):
        consistency_error(fw[0], bw[0][:, :-1])
