"""The non-learned Table 5.8 baselines: the edge-guided Laplace flow fill on hand-made fields, and
the DFVI-like / FGVC-like / TELEA-only pipelines on a hand-made clip (a textured rectangle moving
(+2, +1) px a frame over a noise background): pixels outside the hole kept bit for bit, nothing
read from the hole, propagation only inside the amodal region, every hole pixel accounted for, bad
input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from instseg.errors import InputError
from instseg.video.voin.classical import (ClassicalConfig, Completion, complete, cv2_inpaint_only, dfvi_like,
                                          fgvc_like, inpaint_frames)
from instseg.video.voin.edge_flow import edge_cuts, edge_guided_flow, edge_guided_flows, flow_edges, harmonic_fill

H, W = 12, 16


def no_cuts(h: int = H, w: int = W) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((h, w - 1), dtype=bool), np.zeros((h - 1, w), dtype=bool)


def box(y0: int, y1: int, x0: int, x1: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


# ---------------------------------------------------------------- the Laplace solver


def test_constant_field_recovered_exactly_and_hole_values_never_read():
    values = np.full((H, W, 2), (2.0, -1.0))
    hole = box(3, 9, 4, 12)
    given = values.copy()
    given[hole] = np.nan  # what the hole held must not matter
    out = harmonic_fill(given, hole, *no_cuts())
    np.testing.assert_allclose(out, values, rtol=0, atol=1e-12)
    assert np.array_equal(out[~hole], values[~hole])


def test_linear_ramp_recovered_exactly():
    """A linear field is harmonic: the 4-neighbour Laplace fill reproduces it (two components, one solve)."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    values = np.stack([0.3 * xx - 0.7 * yy + 2.0, -1.1 * xx + 0.2 * yy], axis=-1)
    hole = box(2, 10, 3, 13) & ~box(5, 7, 7, 9)  # a ring: known values inside it too
    out = harmonic_fill(np.where(hole[..., None], 99.0, values), hole, *no_cuts())
    np.testing.assert_allclose(out, values, rtol=0, atol=1e-10)
    smooth_only = harmonic_fill(np.where(hole[..., None], 0.0, values ** 2), hole, *no_cuts())
    assert np.abs(smooth_only - values ** 2)[hole].max() > 0.1  # a quadratic is not harmonic: the test can fail


def test_edge_separates_two_constants():
    """The amodal contour cuts the pairs across it: each side keeps its own constant exactly."""
    left = np.zeros((H, W), dtype=bool)
    left[:, :8] = True
    values = np.where(left, 5.0, -1.0)
    hole = box(3, 9, 4, 12)  # straddles the contour
    out = harmonic_fill(np.where(hole, 0.0, values), hole, *edge_cuts(np.zeros((H, W), dtype=bool), left))
    np.testing.assert_allclose(out, values, rtol=0, atol=1e-12)
    blurred = harmonic_fill(np.where(hole, 0.0, values), hole, *no_cuts())
    assert np.abs(blurred - values)[hole].max() > 1.0  # without the cut the two constants mix


def test_pixel_edges_cut_and_isolated_pixels_get_the_smooth_fill():
    """An edge column through the whole frame: each side keeps its constant; the edge pixels, cut
    from everything, are solved with nothing cut (the mean of their two sides here)."""
    values = np.where(np.arange(W)[None, :] < 8, 5.0, -1.0) * np.ones((H, 1))
    edges = np.zeros((H, W), dtype=bool)
    edges[:, 8] = True
    values[:, 8] = 2.0  # the edge column's own true value is not known to the fill
    hole = box(3, 9, 4, 12)
    out = harmonic_fill(np.where(hole, 0.0, values), hole, *edge_cuts(edges, np.zeros((H, W), dtype=bool)))
    np.testing.assert_allclose(out[hole & ~edges], values[hole & ~edges], rtol=0, atol=1e-12)
    np.testing.assert_allclose(out[3:9, 8], 2.0, rtol=0, atol=1e-12)


def test_edge_cuts_by_hand():
    edges = np.array([[0, 1, 0], [0, 0, 0]], dtype=bool)
    regions = np.array([[0, 0, 0], [1, 1, 0]])
    right, down = edge_cuts(edges, regions)
    assert np.array_equal(right, [[True, True], [False, True]])
    assert np.array_equal(down, [[True, True, False]])


def test_solver_bad_input():
    hole = box(3, 9, 4, 12)
    with pytest.raises(InputError, match="no known pixel"):
        harmonic_fill(np.zeros((H, W)), np.ones((H, W), dtype=bool), *no_cuts())
    with pytest.raises(InputError, match="unknown must be bool"):
        harmonic_fill(np.zeros((H, W)), hole.astype(int), *no_cuts())
    with pytest.raises(InputError, match="cuts must be"):
        harmonic_fill(np.zeros((H, W)), hole, *no_cuts(H, W + 1))
    with pytest.raises(InputError, match="known values contain NaN"):
        harmonic_fill(np.where(box(0, 1, 0, 1), np.nan, 0.0), hole, *no_cuts())
    with pytest.raises(InputError, match="same"):
        edge_cuts(np.zeros((H, W), dtype=bool), np.zeros((H, W + 1), dtype=bool))


def test_flow_edges_only_outside_the_hole():
    flow = np.zeros((32, 32, 2))
    flow[:, 16:, 0] = 3.0  # a motion boundary at x = 16 ...
    flow[4:12, :, 1] = 3.0  # ... and one at y = 4 / 12, hidden by the hole below in part
    hole = box(0, 16, 0, 32, 32, 32)
    edges = flow_edges(flow, hole)
    assert edges[20:28, 15:17].any(axis=1).all()  # the vertical boundary, below the hole
    assert not edges[hole].any()
    assert not edges[20:28, :12].any() and not edges[20:28, 20:].any()


# ---------------------------------------------------------------- a hand-made clip

L, CH, CW, STEP = 5, 32, 40, (2, 1)
OBJ = (6, 5, 14, 11)  # x0, y0, width, height in frame 0


def moving_clip(seed: int = 0):
    """Frames, amodal masks and exact flows (object (+2, +1), still background)."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(40, 200, size=(OBJ[3], OBJ[2], 3))
    frames = rng.integers(0, 256, size=(L, CH, CW, 3)).astype(np.uint8)
    amodal = np.zeros((L, CH, CW), dtype=bool)
    for t in range(L):
        x0, y0 = OBJ[0] + STEP[0] * t, OBJ[1] + STEP[1] * t
        amodal[t, y0:y0 + OBJ[3], x0:x0 + OBJ[2]] = True
        frames[t, y0:y0 + OBJ[3], x0:x0 + OBJ[2]] = texture
    fw = np.zeros((L - 1, CH, CW, 2), dtype=np.float32)
    bw = np.zeros_like(fw)
    fw[amodal[:-1]] = STEP
    bw[amodal[1:]] = (-STEP[0], -STEP[1])
    return frames, amodal, {"forward": fw, "backward": bw}


def object_hole(frames_with_hole, cols=(4, 9), rows=(3, 8)) -> np.ndarray:
    """A hole fixed in object coordinates, in the given frames (seen in the others)."""
    hole = np.zeros((L, CH, CW), dtype=bool)
    for t in frames_with_hole:
        x0, y0 = OBJ[0] + STEP[0] * t, OBJ[1] + STEP[1] * t
        hole[t, y0 + rows[0]:y0 + rows[1], x0 + cols[0]:x0 + cols[1]] = True
    return hole


def corrupt(truth: np.ndarray, hole: np.ndarray, seed: int = 1) -> np.ndarray:
    """An occluder's colours in the hole."""
    out = truth.copy()
    out[hole] = np.random.default_rng(seed).integers(0, 256, size=(int(hole.sum()), 3))
    return out


def garbage_in_hole(flows: dict, hole: np.ndarray) -> dict:
    """The flow an estimator sees inside the hole: the occluder's motion (-3, 0), both directions."""
    fw, bw = flows["forward"].copy(), flows["backward"].copy()
    fw[hole[:-1]] = (-3.0, 0.0)
    bw[hole[1:]] = (3.0, 0.0)
    return {"forward": fw, "backward": bw}


STAGES = ("none", "given", "edge_guided")


def run(stage: str, frames, hole, amodal, flows, **kw) -> Completion:
    visible = amodal & ~hole
    return complete(frames, visible, hole, amodal, flows, stage, **kw)


@pytest.mark.parametrize("stage", STAGES)
def test_outside_the_hole_bit_exact_and_hole_input_never_read(stage):
    truth, amodal, flows = moving_clip()
    hole = object_hole(range(1, 4))
    hole[2, 0:4, 0:6] = True  # background hole pixels too
    a = run(stage, corrupt(truth, hole, 1), hole, amodal, flows)
    b = run(stage, corrupt(truth, hole, 2), hole, amodal, flows)
    assert np.array_equal(a.frames[~hole], truth[~hole]) and a.frames.dtype == np.uint8
    assert np.array_equal(a.frames, b.frames)  # what the occluder showed in the hole changes nothing
    assert np.array_equal(a.propagated | a.inpainted, hole) and not (a.propagated & a.inpainted).any()


def test_dfvi_with_exact_flow_fills_the_object_exactly():
    truth, amodal, flows = moving_clip()
    hole = object_hole(range(1, 4))
    done = run("given", corrupt(truth, hole), hole, amodal, flows)
    assert np.array_equal(done.propagated, hole) and not done.inpainted.any() and done.propagated_fraction == 1.0
    assert np.array_equal(done.frames, truth)


def test_propagation_only_inside_the_amodal_region():
    """Hole pixels outside the target are never propagated into: TELEA fills them."""
    truth, amodal, flows = moving_clip()
    hole = object_hole(range(1, 4))
    outside = np.zeros_like(hole)
    outside[2, 0:4, 0:6] = True
    outside[3, 25:30, 30:36] = True
    done = run("given", corrupt(truth, hole | outside), hole | outside, amodal, flows)
    assert not (done.propagated & ~amodal).any()
    assert np.array_equal(done.inpainted, outside) and np.array_equal(done.propagated, hole)
    # the TELEA pixels are TELEA's from the propagated frames, hole pixels zeroed
    source = done.frames.copy()
    source[outside] = 0
    painted = cv2.inpaint(source[2], outside[2].astype(np.uint8), 3, cv2.INPAINT_TELEA)
    assert np.array_equal(done.frames[2][outside[2]], painted[outside[2]])


def test_unfilled_pixels_go_to_telea_and_are_counted():
    """A part of the object hidden in every frame cannot be propagated: TELEA fills it."""
    truth, amodal, flows = moving_clip()
    always = object_hole(range(L), cols=(0, 3), rows=(0, 3))  # the object's top-left corner, every frame
    sometimes = object_hole(range(1, 4))
    hole = always | sometimes
    done = run("given", corrupt(truth, hole), hole, amodal, flows)
    assert np.array_equal(done.inpainted, always) and np.array_equal(done.propagated, sometimes)
    assert done.propagated_fraction == pytest.approx(sometimes.sum() / hole.sum())
    assert np.array_equal(done.frames[sometimes], truth[sometimes])


def test_telea_only_fills_everything_by_telea():
    truth, amodal, flows = moving_clip()
    hole = object_hole(range(1, 4))
    frames = corrupt(truth, hole)
    done = run("none", frames, hole, amodal, None)
    assert not done.propagated.any() and np.array_equal(done.inpainted, hole) and done.propagated_fraction == 0.0
    for t in range(1, 4):
        painted = cv2.inpaint(np.where(hole[t][..., None], 0, frames[t]).astype(np.uint8),
                              hole[t].astype(np.uint8), 3, cv2.INPAINT_TELEA)
        assert np.array_equal(done.frames[t], np.where(hole[t][..., None], painted, frames[t]))
    assert np.array_equal(inpaint_frames(frames, np.zeros_like(hole)), frames)
    assert np.array_equal(cv2_inpaint_only(frames, amodal & ~hole, hole, amodal), done.frames)


def test_fgvc_recovers_the_flow_the_estimator_got_wrong_in_the_hole():
    """Inside the hole the flow is the occluder's: DFVI-like propagates wrong colours from it, FGVC-like
    discards it and re-solves it from the target's flow around the hole (cut at the amodal contour)."""
    truth, amodal, flows = moving_clip()
    hole = object_hole(range(1, 4))
    wrong = garbage_in_hole(flows, hole)
    completed = edge_guided_flows(wrong, hole, amodal)
    for d in ("forward", "backward"):
        np.testing.assert_allclose(completed[d], flows[d], rtol=0, atol=1e-5)
    frames = corrupt(truth, hole)
    fgvc = run("edge_guided", frames, hole, amodal, wrong)
    dfvi = run("given", frames, hole, amodal, wrong)
    assert np.array_equal(fgvc.frames, truth)
    assert not np.array_equal(dfvi.frames, truth)
    visible = amodal & ~hole
    assert np.array_equal(fgvc_like(frames, visible, hole, amodal, wrong), fgvc.frames)
    assert np.array_equal(dfvi_like(frames, visible, hole, amodal, wrong), dfvi.frames)


def test_edge_guided_flow_keeps_the_flow_outside_the_hole():
    _, amodal, flows = moving_clip()
    hole = object_hole(range(1, 4))
    flow = garbage_in_hole(flows, hole)["forward"][1]
    out = edge_guided_flow(flow, hole[1], amodal[1])
    assert out.dtype == np.float32 and np.array_equal(out[~hole[1]], flow[~hole[1]])
    assert np.array_equal(edge_guided_flow(flow, np.zeros_like(hole[1]), amodal[1]), flow)


def test_bad_inputs():
    truth, amodal, flows = moving_clip()
    hole = object_hole(range(1, 4))
    visible = amodal & ~hole
    with pytest.raises(InputError, match="uint8"):
        dfvi_like(truth.astype(np.float32), visible, hole, amodal, flows)
    with pytest.raises(InputError, match="occluded must be bool"):
        dfvi_like(truth, visible, hole.astype(np.uint8), amodal, flows)
    with pytest.raises(InputError, match="amodal must be bool"):
        fgvc_like(truth, visible, hole, amodal[:-1], flows)
    with pytest.raises(InputError, match="both visible and occluded"):
        cv2_inpaint_only(truth, amodal, hole, amodal)
    with pytest.raises(InputError, match=r"lack \['backward'\]"):
        fgvc_like(truth, visible, hole, amodal, {"forward": flows["forward"]})
    with pytest.raises(InputError, match="one per consecutive pair"):
        dfvi_like(truth, visible, hole, amodal, dict(flows, forward=flows["forward"][:-1]))
    bad = flows["backward"].copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match="sample 7: backward flows contain NaN"):
        fgvc_like(truth, visible, hole, amodal, dict(flows, backward=bad), record="sample 7")
    with pytest.raises(InputError, match="flow_stage"):
        complete(truth, visible, hole, amodal, flows, "deepfill")
    with pytest.raises(InputError, match="unknown keys"):
        ClassicalConfig.from_dict({"radius": 5})
    with pytest.raises(InputError, match="canny_low <= canny_high"):
        ClassicalConfig.from_dict({"canny_low": 0.5, "canny_high": 0.1})
    assert ClassicalConfig.from_dict({"inpaint_radius": 5}).inpaint_radius == 5
