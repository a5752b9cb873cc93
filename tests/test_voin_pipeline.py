"""VOIN run directories and the inference pipeline: round trip, composition, windows, memory."""

from __future__ import annotations

import dataclasses
import json
import weakref

import numpy as np
import pytest
import torch

from instseg.errors import InputError
from instseg.video.voin.pipeline import (
    FrameMasks,
    InpaintConfig,
    InpaintStats,
    ObjectMasks,
    check_amodal_source,
    generate,
    inpaint_clip,
    inpaint_object,
    inpaint_video,
    sliding_windows,
)
from instseg.video.voin.propagation import propagate
from instseg.video.voin.runs import VOIN_FILE, WEIGHTS, load_voin_run, save_voin_run
from instseg.video.voin.toy import toy_run, toy_video

torch.set_num_threads(1)
NO_PROPAGATION = InpaintConfig(shape_crop_size=32, propagate=False)


@pytest.fixture(scope="module")
def video():
    return toy_video(23, (28, 30))  # neither side a multiple of 4: the generator's padding is exercised


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    return load_voin_run(toy_run(tmp_path_factory.mktemp("full")))


def _targets(video, amodal=True, objects=(1, 2)):
    return [ObjectMasks(video.visible == k, (video.amodal == k) if amodal else None, 1) for k in objects]


def _items(video, amodal=True):
    return [FrameMasks(f, v, a if amodal else None) for f, v, a in zip(video.frames, video.visible, video.amodal)]


def _hole(video, objects=(1, 2)):
    return np.any([(video.amodal == k) & (video.visible != k) for k in objects], axis=0)


# --------------------------------------------------------------------------------------- runs

def test_run_round_trip_gives_equal_outputs(tmp_path, video):
    run_dir = toy_run(tmp_path / "a", seed=3, use_propagated=True)
    run = load_voin_run(run_dir)
    assert run.shape is not None and run.flow is not None and run.num_categories == 3
    assert run.generator.cfg.use_propagated and run.settings == InpaintConfig(shape_crop_size=32)
    assert not run.generator.training and not run.shape.training
    save_voin_run(tmp_path / "b", run.generator, run.shape, run.flow, run.settings)
    again = load_voin_run(tmp_path / "b")
    for a, b in ((run.generator, again.generator), (run.shape, again.shape), (run.flow, again.flow)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    clip = video.frames[:6]
    targets = [ObjectMasks(video.visible[:6] == 1, None, 2)]  # amodal from the shape model
    out_a, res_a = inpaint_clip(run, clip, targets)
    out_b, res_b = inpaint_clip(again, clip, targets)
    assert res_a[0].hole.any() and np.array_equal(out_a, out_b) and np.array_equal(res_a[0].hole, res_b[0].hole)


def test_run_without_optional_models(tmp_path):
    run = load_voin_run(toy_run(tmp_path, shape=False, flow=False))
    assert run.shape is None and run.flow is None and run.num_categories is None
    data = json.loads((tmp_path / VOIN_FILE).read_text())
    assert data["shape"] is None and data["flow"] is None and data["generator"]["channels"] == 4
    assert not (tmp_path / WEIGHTS["shape"]).exists()
    with pytest.raises(InputError, match="--amodal-masks"):
        check_amodal_source(run, amodal_given=False)
    check_amodal_source(run, amodal_given=True)


def test_run_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="not a VOIN run directory") as err:
        load_voin_run(tmp_path / "nowhere")
    assert "nowhere" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=f"no {VOIN_FILE}"):
        load_voin_run(tmp_path / "empty")
    run_dir = toy_run(tmp_path / "run")
    spec = run_dir / VOIN_FILE
    good = spec.read_text()

    def expect(text, match, names):
        spec.write_text(text)
        with pytest.raises(InputError, match=match) as err:
            load_voin_run(run_dir)
        assert str(names) in str(err.value)
        spec.write_text(good)

    data = json.loads(good)
    expect("{not json", "cannot read", spec)
    expect(json.dumps(dict(data, format=99)), "format", spec)
    expect(json.dumps(dict(data, generator=dict(data["generator"], chanels=4))), "unknown keys: chanels", spec)
    expect(json.dumps(dict(data, settings={"consistency_px": -1})), "consistency_px", spec)
    expect(json.dumps(dict(data, flow=[1, 2])), "bad flow config", spec)
    expect(json.dumps(dict(data, num_categories=7)), "num_categories", spec)
    expect(json.dumps(dict(data, generator=dict(data["generator"], channels=8))), "do not fit the generator",
           run_dir / WEIGHTS["generator"])
    weights = run_dir / WEIGHTS["shape"]
    weights.write_bytes(weights.read_bytes()[:100])  # torn file
    with pytest.raises(InputError, match="unreadable") as err:
        load_voin_run(run_dir)
    assert str(weights) in str(err.value)
    weights.unlink()
    with pytest.raises(InputError, match="not found") as err:
        load_voin_run(run_dir)
    assert str(weights) in str(err.value)


# ---------------------------------------------------------------------------------- one clip

@pytest.mark.parametrize("use_propagated", [False, True])
def test_output_equals_input_outside_the_hole(tmp_path, video, use_propagated):
    run = load_voin_run(toy_run(tmp_path, use_propagated=use_propagated))
    for amodal in (True, False):  # given, or predicted by the shape model
        out, results = inpaint_clip(run, video.frames[:8], [ObjectMasks(video.visible[:8] == k,
                                                                         (video.amodal[:8] == k) if amodal else None)
                                                            for k in (1, 2)])
        hole = results[0].hole | results[1].hole
        assert hole.any() and out.dtype == np.uint8 and out.shape == video.frames[:8].shape
        assert np.array_equal(out[~hole], video.frames[:8][~hole])
        assert (out[hole] != video.frames[:8][hole]).any()  # something was filled in
        for r, k in zip(results, (1, 2)):
            assert not (r.hole & (video.visible[:8] == k)).any()  # never inside the visible part
            assert not (r.propagated & ~r.hole).any()


def test_generator_fills_the_hole_without_propagation(tmp_path, video):
    run = load_voin_run(toy_run(tmp_path, settings=NO_PROPAGATION))
    frames, visible, amodal = video.frames[:5], video.visible[:5] == 1, video.amodal[:5] == 1
    result = inpaint_object(run, frames, visible, amodal)
    hole = amodal & ~visible
    raw = generate(run.generator, frames, visible, hole, amodal)
    assert raw.shape == frames.shape  # padded to 28x32 inside, cropped back
    assert np.array_equal(result.frames[hole], raw[hole]) and not result.propagated.any()
    assert np.array_equal(result.frames[~hole], frames[~hole])


def test_propagation_fills_with_the_true_colours_and_the_generator_the_rest(tmp_path):
    """A texture sliding 1 px a frame to the right, the object a band of it with a fixed hole: along
    the exact flow, propagation brings back the texture itself; the generator gets what it left."""
    run = load_voin_run(toy_run(tmp_path, flow=False))
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    length = 6
    frames = np.stack([np.roll(texture, t, axis=1) for t in range(length)])
    amodal = np.zeros((length, 24, 40), bool)
    amodal[:, 6:18, 4:36] = True
    occluder = np.zeros_like(amodal)
    occluder[:, 8:16, 16:26] = True  # wider than the clip slides: its middle is never seen
    visible = amodal & ~occluder
    flows = {"forward": np.tile(np.array([1.0, 0.0], np.float32), (length - 1, 24, 40, 1)),
             "backward": np.tile(np.array([-1.0, 0.0], np.float32), (length - 1, 24, 40, 1))}
    result = inpaint_object(run, frames, visible, amodal, flows)
    expected = propagate(frames, occluder, amodal, flows["forward"], flows["backward"])
    assert result.propagated.any() and np.array_equal(result.propagated, expected.filled)
    assert np.array_equal(result.frames[result.propagated], frames[result.propagated])  # the true colours
    rest = occluder & ~result.propagated
    assert rest.any()
    raw = generate(run.generator, expected.frames, visible, rest, amodal)
    assert np.array_equal(result.frames[rest], raw[rest])


def test_empty_hole_is_a_copy(full_run, video):
    visible = video.amodal[:4] == 1
    result = inpaint_object(full_run, video.frames[:4], visible, visible)
    assert not result.hole.any() and np.array_equal(result.frames, video.frames[:4])
    with pytest.raises(InputError, match="do not fit"):
        inpaint_object(full_run, video.frames[:4], visible[:3], visible[:3])


# ------------------------------------------------------------------------------------ windows

@pytest.mark.parametrize("length,window,overlap", [(11, 4, 2), (3, 5, 2), (1, 3, 1), (10, 3, 0), (9, 3, 5)])
def test_sliding_windows_cover_every_item_once_with_its_context(length, window, overlap):
    seen = []
    for buffer, start, stop in sliding_windows(range(length), window, overlap):
        items = list(buffer)
        c0, c1 = items[start], items[stop - 1] + 1
        assert 0 < stop - start <= window and items == list(range(max(c0 - overlap, 0), min(c1 + overlap, length)))
        seen += items[start:stop]
    assert seen == list(range(length))
    with pytest.raises(InputError):
        list(sliding_windows(range(3), 0, 1))


@pytest.mark.parametrize("objects", [(1,), (1, 2)])
def test_windows_equal_whole_video_when_the_overlap_covers_the_receptive_field(tmp_path, video, objects):
    """Given amodal masks, no propagation: with overlap >= K R (K objects, R the generator's temporal
    receptive field) the windowed frames are bit-identical to whole-video inference; with less they
    are not (the windows' zero padding reaches the centre frames)."""
    run = load_voin_run(toy_run(tmp_path, settings=NO_PROPAGATION))
    reach = run.generator.temporal_receptive_field
    assert reach == 7
    whole, _ = inpaint_clip(run, video.frames, _targets(video, objects=objects))
    exact = np.stack(list(inpaint_video(run, _items(video), objects, window=4, overlap=len(objects) * reach)))
    assert np.array_equal(exact, whole)
    short = np.stack(list(inpaint_video(run, _items(video), objects, window=4, overlap=2)))
    assert not np.array_equal(short, whole)
    assert np.array_equal(short[~_hole(video, objects)], video.frames[~_hole(video, objects)])


@pytest.mark.parametrize("length,window,overlap", [(23, 5, 3), (7, 4, None), (2, 5, 1)])
def test_full_pipeline_in_windows_writes_each_frame_once(full_run, video, length, window, overlap):
    part = dataclasses.replace(video, frames=video.frames[:length], visible=video.visible[:length],
                               amodal=video.amodal[:length])
    stats = InpaintStats()
    out = list(inpaint_video(full_run, _items(part), [1, 2], window, overlap, {1: 1, 2: 3}, stats))
    assert len(out) == stats.frames == length and stats.windows == -(-length // window)
    hole = _hole(part)
    assert np.array_equal(np.stack(out)[~hole], part.frames[~hole])
    assert stats.hole[1] == int(((part.amodal == 1) & (part.visible != 1)).sum())  # each frame counted once
    assert 0 <= stats.propagated[1] <= stats.hole[1]


def test_frames_held_at_once_stay_within_the_window(full_run, video):
    """The reader is instrumented: each frame it hands out is tracked until it is freed. With
    shape model, flow net, propagation and generator, never more than window + 2 overlap live."""
    window, overlap = 3, 2
    alive, peak = [0], [0]

    def release():
        alive[0] -= 1

    def reader():
        for f, v in zip(video.frames, video.visible):
            frame = f.copy()
            weakref.finalize(frame, release)
            alive[0] += 1
            peak[0] = max(peak[0], alive[0])
            yield FrameMasks(frame, v)

    out = sum(1 for _ in inpaint_video(full_run, reader(), [1, 2], window, overlap))
    assert out == len(video.frames) and peak[0] == window + 2 * overlap


def test_bad_arguments(full_run, video):
    with pytest.raises(InputError, match="window"):
        inpaint_video(full_run, _items(video), [1], window=0)
    with pytest.raises(InputError, match="no objects"):
        inpaint_video(full_run, _items(video), [], window=4)
    with pytest.raises(InputError, match="labels"):
        inpaint_clip(full_run, video.frames[:3], [ObjectMasks(video.visible[:3] == 1, None, 9)])
