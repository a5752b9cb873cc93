"""VOI construction: YouTube-VOI mask identities, clean/corrupted frames, occluder motion, the
natural-occlusion clean render, determinism, placement failure, storage (atomic, checked) and the
noise leak diagnostic, on a tiny generated OccludedShapes-VIS benchmark (64 px, 8 frames)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from instseg.data.appearance import Appearance, draw_appearance
from instseg.errors import InputError
from instseg.video.data.occluded_shapes_vis import SMOKE, VideoBenchmarkConfig, build_video_benchmark, load_scenes
from instseg.video.data.occluded_shapes_vis.render import background, frame_masks, render_frame
from instseg.video.voin.data import (
    Occluder,
    PlacementError,
    VoiConfig,
    bezier_outline,
    build_voi_split,
    eligible_clips,
    front_scene,
    iter_samples,
    leak_diagnostic,
    make_sample,
    natural_sample,
    noise_match,
    place_occluder,
    plan_samples,
    read_index,
    read_sample,
    split_leak_report,
    synthetic_sample,
    write_sample,
)
from instseg.video.voin.data import store
from instseg.video.voin.data.noise import quantise, sensor_noise

CFG = VoiConfig(clip_length=6, clip_stride=2, min_area=30, natural_min_occluded=0.05, natural_min_frames=1,
                natural_min_visible_frames=3, synthetic_per_video=3, natural_per_video=2)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """A tiny benchmark: 3 validation videos of 8 frames at 64 px."""
    out = tmp_path_factory.mktemp("vis")
    cfg = VideoBenchmarkConfig.from_dict(dict(SMOKE, split_sizes={"train": 0, "val": 3, "test": 0}))
    build_video_benchmark(cfg, out)
    return out


@pytest.fixture(scope="module")
def scenes(bench) -> dict[int, dict]:
    return load_scenes(bench / "annotations" / "val.json")


def _synthetic_target(scenes) -> tuple[int, int, int]:
    for vid in sorted(scenes):
        clips = eligible_clips(scenes[vid], CFG)["synthetic"]
        if clips:
            return (vid, *clips[0])
    raise AssertionError("no eligible synthetic clip in the tiny benchmark")


def _template(kind: str, seed: int = 3) -> Occluder:
    rng = np.random.default_rng(seed)
    look = draw_appearance(rng)
    if kind == "object":
        return Occluder("object", look, np.empty((0, 7)), shape="star", aspect=0.9)
    return Occluder("blob", look, np.empty((0, 7)), aspect=0.85, outline=bezier_outline(rng, (5, 9)))


def _synthetic(scenes, kind: str, seed: int = 0, cfg: VoiConfig = CFG):
    vid, tid, start = _synthetic_target(scenes)
    return synthetic_sample(scenes[vid], tid, start, cfg, _template(kind), np.random.default_rng(seed),
                            video_id=vid), scenes[vid], start


def _occluder_of(sample) -> Occluder:
    d = sample.meta["occluder"]
    outline = None if d["outline"] is None else np.array(d["outline"])
    return Occluder(d["kind"], Appearance(**d["look"]), np.array(d["poses"]), shape=d["shape"],
                    aspect=d["aspect"], outline=outline)


def _check_identities(sample) -> None:
    present = sample.amodal.any(axis=(1, 2))
    assert present.all()
    assert np.array_equal(sample.occluded | sample.visible, sample.amodal)
    assert not (sample.occluded & sample.visible).any()
    assert not (sample.occluded & ~sample.occluder).any()
    assert not (sample.visible & sample.occluder).any()


def test_noise_is_the_generators_stream(scenes):
    scene = scenes[min(scenes)]
    everything = [o["track_id"] for o in scene["objects"]]
    for t in (0, scene["length"] - 1):
        mirrored = quantise(background(scene, t) + sensor_noise(scene, t))
        assert np.array_equal(mirrored, render_frame(scene, t, hidden=everything))


@pytest.mark.parametrize("kind", ["object", "blob"])
def test_synthetic_masks_and_frames(scenes, kind):
    sample, scene, start = _synthetic(scenes, kind)
    _check_identities(sample)
    frac = np.array(sample.meta["occluded_fraction"])
    assert (frac >= CFG.min_occluded).all() and (frac <= CFG.max_occluded).all()
    assert (sample.occluded.sum(axis=(1, 2)) > 0).all()
    # the source's visible mask minus the occluder; eligible targets are unoccluded in the source
    for k in range(sample.length):
        assert np.array_equal(sample.amodal[k], frame_masks(scene, start + k)[sample.meta["track_id"]]["amodal"])
    # clean = the source frames; corrupted = clean outside the occluder, the occluder's noisy pixels inside
    occ = _occluder_of(sample)
    h, w = scene["height"], scene["width"]
    for k in range(sample.length):
        t = start + k
        assert np.array_equal(sample.clean[k], render_frame(scene, t))
        outside = ~sample.occluder[k]
        assert np.array_equal(sample.corrupted[k][outside], sample.clean[k][outside])
        m = occ.mask(k, h, w)
        assert np.array_equal(m, sample.occluder[k])
        expected = quantise(occ.colours(k, m, h, w) + sensor_noise(scene, t)[m])
        assert np.array_equal(sample.corrupted[k][m], expected)
    assert (sample.corrupted != sample.clean).any()


def test_occluder_moves_and_deforms_non_uniformly(scenes):
    sample, scene, start = _synthetic(scenes, "blob")
    poses = np.array(sample.meta["occluder"]["poses"])
    velocity = np.diff(poses[:, :2], axis=0)
    assert np.abs(np.diff(velocity, axis=0)).max() > 1e-3  # accelerates: not a constant translation
    assert np.abs(velocity).max() <= CFG.max_relative_speed + 3.0  # a few px/frame
    assert np.ptp(poses[:, 3]) > 1e-3 and np.ptp(np.diff(poses[:, 2])) > 1e-4  # scale and rotation drift
    target = np.array([f[:2] for f in scene["objects"][sample.meta["track_id"] - 1]["frames"][start:start + 6]])
    assert np.abs(np.diff(target, axis=0) - velocity).max() > 1e-2  # its own motion, not the target's
    shifts = [not np.array_equal(a, b) for a, b in zip(sample.occluder[:-1], sample.occluder[1:])]
    assert all(shifts)


def test_natural_clean_is_the_target_in_front(scenes):
    vid = min(scenes)
    scene = json.loads(json.dumps(scenes[vid]))
    a, b = scene["objects"][0], scene["objects"][1]
    for fa, fb in zip(a["frames"], b["frames"]):  # b sits half over a, in front, every frame
        fb[0], fb[1], fb[3], fb[4] = fa[0] + 0.6 * fa[3], fa[1], fa[3], fa[4] + 10.0
    sample = natural_sample(scene, a["track_id"], 1, CFG)
    _check_identities(sample)
    assert (sample.occluded.sum(axis=(1, 2)) > 0).all()
    others = [o["track_id"] for o in scene["objects"] if o["track_id"] != a["track_id"]]
    for k in range(sample.length):
        t = 1 + k
        assert np.array_equal(sample.corrupted[k], render_frame(scene, t))
        away = ~sample.amodal[k]
        assert np.array_equal(sample.clean[k][away], sample.corrupted[k][away])
        alone = render_frame(scene, t, hidden=others)  # the target's full appearance, noise included
        assert np.array_equal(sample.clean[k][sample.amodal[k]], alone[sample.amodal[k]])
        assert (sample.clean[k][sample.occluded[k]] != sample.corrupted[k][sample.occluded[k]]).any()
    assert np.array_equal(render_frame(front_scene(scene, a["track_id"]), 1), sample.clean[0])
    with pytest.raises(InputError, match=r"track 1 frames 1\.\.6: scene objects hide part of the target"):
        synthetic_sample(scene, a["track_id"], 1, CFG, _template("blob"), np.random.default_rng(0), video_id=vid)


def test_eligible_synthetic_targets_are_unoccluded(scenes):
    for vid, scene in scenes.items():
        masks = [frame_masks(scene, t) for t in range(scene["length"])]
        for tid, start in eligible_clips(scene, CFG)["synthetic"]:
            for m in masks[start:start + CFG.clip_length]:
                assert np.array_equal(m[tid]["visible"], m[tid]["amodal"]) and m[tid]["amodal"].sum() >= CFG.min_area


def test_plan_and_samples_are_deterministic(scenes):
    first = plan_samples(scenes, CFG, "val", seed=5)
    assert first == plan_samples(scenes, CFG, "val", seed=5)
    assert first != plan_samples(scenes, CFG, "val", seed=6)
    assert {s.kind for s in first} >= {"synthetic"}
    spec = next(s for s in first if s.kind == "synthetic")
    one, two = make_sample(spec, scenes, CFG), make_sample(spec, scenes, CFG)
    for key in ("corrupted", "clean", "amodal", "occluded", "occluder", "visible"):
        assert np.array_equal(getattr(one, key), getattr(two, key))
    assert one.meta == two.meta
    if spec.occluder_kind == "object":
        assert spec.outline_source[0] != spec.video_id  # object outlines come from other videos


def test_placement_error_on_impossible_request(scenes):
    impossible = VoiConfig(clip_length=6, min_area=30, min_occluded=0.98, max_occluded=1.0,
                           occluder_scale=(0.1, 0.15), placement_tries=5)
    with pytest.raises(PlacementError, match=r"track \d+ frames .*0\.98"):
        _synthetic(scenes, "blob", cfg=impossible)
    amodal = np.zeros((6, 16, 16), dtype=bool)
    with pytest.raises(PlacementError, match="no pixel"):
        place_occluder(np.random.default_rng(0), CFG, _template("blob"), amodal, np.zeros((6, 2)), 4.0)


def test_leak_diagnostic_noise_matches_and_catches_flat_patches(scenes):
    for kind in ("object", "blob"):
        sample, scene, _ = _synthetic(scenes, kind)
        d = leak_diagnostic(sample)["corrupted"]
        assert d.inside_pixels > 100 and d.outside_pixels > 100
        assert abs(d.ratio - 1.0) < 0.2, d
        assert abs(d.auc - 0.5) < 0.35, d
    # controls: the same occluder without noise, and with twice the noise, must be caught
    flat = sample.corrupted.copy()
    flat[sample.occluder] = quantise(np.full(3, 0.5))
    d = noise_match(flat, sample.occluder)
    assert d.ratio < 0.3 and d.auc > 0.9
    occ = _occluder_of(sample)
    loud = sample.corrupted.copy()
    rng = np.random.default_rng(1)
    for k in range(sample.length):
        m = sample.occluder[k]
        colours = occ.colours(k, m, scene["height"], scene["width"])
        loud[k][m] = quantise(colours + rng.normal(0, 2 * scene["noise"]["std"], colours.shape))
    assert noise_match(loud, sample.occluder).ratio > 1.2


def test_build_split_round_trip(bench, scenes, tmp_path):
    ann = bench / "annotations" / "val.json"
    stats = build_voi_split(ann, tmp_path / "ref", "val", CFG, seed=2)
    embedded = build_voi_split(ann, tmp_path / "emb", "val", CFG, seed=2, embed_frames=True)
    assert stats["samples"] == embedded["samples"] > 0 and stats["skipped"] == embedded["skipped"]
    assert stats["bytes_per_sample"] < embedded["bytes_per_sample"]
    assert stats["natural"] > 0 and stats["synthetic"] > 0
    index = read_index(tmp_path / "ref" / "val" / "index.json")
    assert index["stats"] == stats and len(index["samples"]) == stats["samples"]
    specs = {s.name + ".npz": s for s in plan_samples(scenes, CFG, "val", 2)}
    pairs = zip(iter_samples(tmp_path / "ref" / "val" / "index.json"),
                iter_samples(tmp_path / "emb" / "val" / "index.json"))
    for (entry, sample), (_, twin) in pairs:
        rebuilt = make_sample(specs[entry["file"]], scenes, CFG)
        for key in ("corrupted", "clean", "amodal", "occluded", "occluder", "visible"):
            assert np.array_equal(getattr(sample, key), getattr(rebuilt, key)), (entry["file"], key)
            assert np.array_equal(getattr(twin, key), getattr(rebuilt, key)), (entry["file"], key)
    report = split_leak_report(iter_samples(tmp_path / "ref" / "val" / "index.json"))
    assert report["synthetic"]["within_tolerance"] == 1.0
    stale = tmp_path / "ref" / "val" / "00999_t01_f000_synthetic.npz"
    stale.write_bytes(b"old")
    again = build_voi_split(ann, tmp_path / "ref", "val", CFG, seed=2)
    untimed = (lambda d: {k: v for k, v in d.items() if "seconds" not in k})
    assert untimed(again) == untimed(stats)
    assert not stale.exists()


def test_malformed_index_and_npz_name_the_file(bench, tmp_path):
    bad = tmp_path / "index.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match=str(bad)):
        read_index(bad)
    bad.write_text(json.dumps({"index_version": 1, "samples": [{"file": "a.npz", "kind": "synthetic"}]}))
    with pytest.raises(InputError, match=r"index\.json: samples\[0\]: sample entry lacks"):
        read_index(bad)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputError, match="broken.npz"):
        read_sample(broken)
    short = tmp_path / "short.npz"
    np.savez_compressed(short, corrupted=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(InputError, match=r"short\.npz: not a VOI sample: lacks"):
        read_sample(short)
    out = build_voi_split(bench / "annotations" / "val.json", tmp_path / "voi", "val", CFG, seed=0)
    assert out["samples"] > 0
    first = read_index(tmp_path / "voi" / "val" / "index.json")["samples"][0]["file"]
    path = tmp_path / "voi" / "val" / first
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["visible"] = arrays["visible"][:, :-1]
    np.savez_compressed(path, **arrays)
    with pytest.raises(InputError, match=rf"{first}: mask 'visible' must be bool"):
        read_sample(path, bench / "frames")
    with pytest.raises(InputError, match="frames_root"):
        read_sample(path)


def test_atomic_write_leaves_no_partial_file(scenes, tmp_path, monkeypatch):
    sample, _, _ = _synthetic(scenes, "object")
    target = tmp_path / "s.npz"
    write_sample(target, sample, embed_frames=True)
    before = target.read_bytes()

    def failing(fh, **arrays):
        fh.write(b"PK partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(store.np, "savez_compressed", failing)
    with pytest.raises(OSError, match="disk full"):
        write_sample(target, sample, embed_frames=True)
    with pytest.raises(OSError, match="disk full"):
        write_sample(tmp_path / "new.npz", sample, embed_frames=True)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]
    monkeypatch.undo()
    assert np.array_equal(read_sample(target).clean, sample.clean)
    sample.corrupted[0, 0, 0] ^= 1  # clean and corrupted must agree outside the occluder
    if not sample.occluder[0, 0, 0]:
        with pytest.raises(ValueError, match="differ outside"):
            write_sample(tmp_path / "x.npz", sample, embed_frames=True)
