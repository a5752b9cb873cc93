"""OccludedShapes-VIS: determinism, render == stored frames, mask/annotation invariants, scheduled
events (full occlusion and reappearance, entering/leaving, depth swaps) and exact flow."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from instseg.data.appearance import _grid, appearance_at, draw_appearance, jitter_appearance, render_appearance
from instseg.data.coco_json import read_json, segmentation_to_mask
from instseg.data.dvc_hash import dir_md5
from instseg.config import load_params
from instseg.errors import InputError
from instseg.video.data.kitti_mots import read_kitti_mots
from instseg.video.params import video_section
from instseg.video.data.occluded_shapes_vis import (
    VideoBenchmarkConfig,
    build_video_benchmark,
    flow,
    frame_masks,
    generate_video,
    load_scenes,
    object_layer,
    render_frame,
    video_statistics,
)
from instseg.video.data.occluded_shapes_vis.build import (
    full_occlusion_events, occlusion_level, seen_occlusion_events, track_states,
)

SMOKE = video_section(load_params(Path(__file__).resolve().parents[1] / "params.yaml"), "smoke", "benchmark")
TINY = dict(SMOKE, frames_per_video=6, split_sizes={"train": 1, "val": 2, "test": 1})
# md5 of render_appearance on 40 looks x 3 sizes, computed with the implementation before appearance_at existed
RENDER_APPEARANCE_MD5 = "8b06c07d600dadaaa8ee823e26e81b68"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vis") / "bench"
    build_video_benchmark(VideoBenchmarkConfig.from_dict(TINY), out)
    return out


@pytest.fixture(scope="module")
def default_videos() -> list[tuple[dict, list[dict]]]:
    """A sample of default-config (cpu scale) videos, generated in memory."""
    cfg = VideoBenchmarkConfig()
    return [generate_video(cfg, "val", i) for i in range(5)]


def test_render_appearance_unchanged_and_appearance_at_matches_it():
    rng = np.random.default_rng(20261203)
    digest = hashlib.md5()
    for k in range(40):
        look = draw_appearance(rng)
        if k % 2:
            look = jitter_appearance(look, rng)
        for h, w in ((128, 128), (64, 96), (37, 53)):
            a = render_appearance(look, h, w)
            digest.update(str(a.dtype).encode())
            digest.update(np.ascontiguousarray(a).tobytes())
    assert digest.hexdigest() == RENDER_APPEARANCE_MD5
    families = set()
    for _ in range(60):
        look = draw_appearance(rng)
        families.add(look.family)
        h, w = (int(v) for v in rng.integers(5, 140, size=2))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        u, _ = _grid(h, w, look.angle)
        expected = render_appearance(look, h, w)
        got = appearance_at(look, xx, yy, max(h, w), float(u.min()))
        assert got.dtype == expected.dtype and np.array_equal(got, expected)
    assert families == {"stripes", "dots", "checker", "gradient"}


def test_config_from_dict():
    cfg = VideoBenchmarkConfig.from_dict({"radius_range": [0.1, 0.2], "frames_per_video": 4})
    assert cfg.radius_range == (0.1, 0.2) and cfg.frames_per_video == 4 and cfg.image_size == 128
    assert VideoBenchmarkConfig.from_dict(SMOKE).split_sizes == {"train": 2, "val": 2, "test": 2}
    with pytest.raises(ValueError, match="unknown video benchmark parameters: \\['fps'\\]"):
        VideoBenchmarkConfig.from_dict({"fps": 30})
    with pytest.raises(ValueError, match="frames_per_video"):
        VideoBenchmarkConfig.from_dict({"frames_per_video": 1})
    with pytest.raises(ValueError, match="scene_tries"):
        VideoBenchmarkConfig.from_dict({"scene_tries": 0})
    with pytest.raises(ValueError, match="objects_visible"):
        VideoBenchmarkConfig.from_dict({"objects_visible": [4, 2]})


def test_rebuild_is_bit_identical_serial_or_parallel(tiny, tmp_path):
    cfg = VideoBenchmarkConfig.from_dict(TINY)
    summary = build_video_benchmark(cfg, tmp_path / "again", workers=2)
    assert summary["videos"] == 4 and summary["frames"] == 24
    assert dir_md5(tmp_path / "again") == dir_md5(tiny)
    build_video_benchmark(VideoBenchmarkConfig.from_dict(dict(TINY, seed=1)), tmp_path / "other")
    assert dir_md5(tmp_path / "other") != dir_md5(tiny)
    meta = read_json(tiny / "meta.json")
    assert meta["config"]["frames_per_video"] == 6 and meta["generator_version"] >= 1
    assert sorted(p.relative_to(tiny).as_posix() for p in (tiny / "mots").rglob("*.txt")) == [
        "mots/test/0000.txt", "mots/train/0000.txt", "mots/val/0000.txt", "mots/val/0001.txt"]


def test_render_frame_equals_stored_png(tiny):
    for split in ("train", "val", "test"):
        gt = read_json(tiny / "annotations" / f"{split}.json")
        scenes = load_scenes(tiny / "annotations" / f"{split}.json")
        for video in gt["videos"]:
            for t, name in enumerate(video["file_names"]):
                stored = np.asarray(Image.open(tiny / "frames" / name))
                assert np.array_equal(render_frame(scenes[video["id"]], t), stored), (split, video["id"], t)


def test_annotations_agree_with_render(tiny):
    video_ids, ann_ids = [], []
    for split in ("train", "val", "test"):
        path = tiny / "annotations" / f"{split}.json"
        gt, scenes = read_json(path), load_scenes(path)
        assert [c["id"] for c in gt["categories"]] == list(range(1, 11))
        video_ids += [v["id"] for v in gt["videos"]]
        ann_ids += [a["id"] for a in gt["annotations"]]
        for video in gt["videos"]:
            h, w, scene = video["height"], video["width"], scenes[video["id"]]
            anns = [a for a in gt["annotations"] if a["video_id"] == video["id"]]
            assert sorted(a["track_id"] for a in anns) == [o["track_id"] for o in scene["objects"]]
            mots = {(r.frame, r.obj_id): r for r in read_kitti_mots(tiny / "mots" / split / f"{video['name']}.txt")}
            expected_rows = set()
            for t in range(video["length"]):
                masks, union = frame_masks(scene, t), np.zeros((h, w), dtype=int)
                for a in anns:
                    ref = masks[a["track_id"]]
                    if a["amodal_segmentations"][t] is None:
                        assert not ref["amodal"].any() and a["segmentations"][t] is None and a["depths"][t] is None
                        continue
                    amodal = segmentation_to_mask(a["amodal_segmentations"][t], h, w).astype(bool)
                    assert np.array_equal(amodal, ref["amodal"]) and a["amodal_areas"][t] == amodal.sum()
                    seg = a["segmentations"][t]
                    visible = np.zeros((h, w), bool) if seg is None else segmentation_to_mask(seg, h, w).astype(bool)
                    assert np.array_equal(visible, ref["visible"]) and not (visible & ~amodal).any()
                    union += visible
                    ratio = 1.0 - visible.sum() / amodal.sum()
                    assert a["occlusion_ratios"][t] == pytest.approx(ratio, abs=1e-6)
                    assert a["occlusion"][t] == occlusion_level(ratio)
                    if seg is None:
                        assert a["occlusion"][t] == "severe" and a["occlusion_ratios"][t] == 1.0
                        assert a["bboxes"][t] is None and a["areas"][t] is None
                    else:
                        ys, xs = np.nonzero(visible)
                        assert a["bboxes"][t] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
                        expected_rows.add((t, a["category_id"] * 1000 + a["track_id"]))
                        assert mots[(t, a["category_id"] * 1000 + a["track_id"])].rle == seg
                assert union.max() <= 1  # visible masks are disjoint
            assert set(mots) == expected_rows
    assert len(set(video_ids)) == len(video_ids) == 4 and len(set(ann_ids)) == len(ann_ids)


def test_seen_occlusion_events_need_clear_frames_on_both_sides():
    def frame(visible: int, amodal: int = 10) -> dict:
        vis, amo = np.zeros(10, bool), np.zeros(10, bool)
        amo[:amodal], vis[:visible] = True, True
        return {1: {"visible": vis, "amodal": amo}}

    clear, sliver, hidden = frame(8), frame(2), frame(0)
    masks = [clear, clear, sliver, hidden, hidden, hidden, sliver, clear, clear]
    assert seen_occlusion_events(masks, 1, k=3, lead=2) == 1
    assert seen_occlusion_events(masks, 1, k=3, lead=3) == 0  # only two clear frames each side
    assert seen_occlusion_events([sliver, sliver, *masks[2:]], 1, k=3, lead=1) == 0  # a sliver before: not seen
    assert seen_occlusion_events(masks, 1, k=4, lead=1) == 0


def test_full_occlusion_events_counts_hand_cases():
    v, h, o = "visible", "hidden", "out"
    assert full_occlusion_events([v, h, h, h, v], 3) == 1
    assert full_occlusion_events([v, h, h, h, v], 4) == 0
    assert full_occlusion_events([h, h, h, v, h, h, h, v], 3) == 1  # the first run was never seen before
    assert full_occlusion_events([v, h, h, h, o, v], 3) == 0  # left the frame instead of reappearing
    assert full_occlusion_events([v, h, h, v, h, h, h, h, v], 2) == 2


def test_default_videos_have_full_occlusion_with_reappearance(default_videos):
    events = 0
    for scene, masks in default_videos:
        for obj in scene["objects"]:
            states = track_states(masks, obj["track_id"])
            events += full_occlusion_events(states, 3)
            for t, s in enumerate(states):
                if s == "hidden":  # really in the frame, fully covered by objects in front
                    front = [o for o in scene["objects"] if o["frames"][t][4] > obj["frames"][t][4]]
                    cover = np.logical_or.reduce([masks[t][o["track_id"]]["amodal"] for o in front])
                    amodal = masks[t][obj["track_id"]]["amodal"]
                    assert amodal.any() and not (amodal & ~cover).any()
    assert events >= 3


def test_default_videos_statistics_match_the_image_benchmark(default_videos):
    cfg = VideoBenchmarkConfig()
    lo, hi = (r * cfg.image_size for r in cfg.radius_range)
    for scene, masks in default_videos:
        assert all(2 <= sum(m[i]["amodal"].any() for i in m) <= 6 for m in masks)
        radii = np.array([f[3] for o in scene["objects"] for f in o["frames"]])
        assert radii.min() >= lo - 1e-6 and radii.max() <= hi + 1e-6


def test_objects_enter_leave_and_pass_in_front_of_each_other(default_videos):
    entering = leaving = swaps = 0
    for scene, masks in default_videos:
        ids = [o["track_id"] for o in scene["objects"]]
        for i in ids:
            s = track_states(masks, i)
            entering += sum(a == "out" and b != "out" for a, b in zip(s, s[1:]))
            leaving += sum(a != "out" and b == "out" for a, b in zip(s, s[1:]))
        for i in ids:
            for j in ids:  # i hides part of j at some frame, j hides part of i at another
                hides = [(m[i]["visible"] & m[j]["amodal"]).any() for m in masks]
                hidden_by = [(m[j]["visible"] & m[i]["amodal"]).any() for m in masks]
                swaps += i < j and any(hides) and any(hidden_by)
    assert entering >= 1 and leaving >= 1 and swaps >= 1


def _hand_scene(shape: str, frames: list[list[float]], camera: list[list[int]]) -> dict:
    look = {"family": "stripes", "hue": 0.3, "saturation": 0.8, "value": 0.8, "dark": 0.4, "period": 6.0, "angle": 0.5}
    n = len(frames)
    return {"height": 64, "width": 64, "length": n, "camera": camera,
            "background": {"kind": "clutter", "seed": 7, "height": 64 + 4, "width": 64 + 4},
            "noise": {"std": 0.015, "seed": 3},
            "objects": [{"track_id": 1, "category_id": 1, "shape": shape, "aspect": 1.0, "look": look,
                         "frames": frames}]}


def test_flow_hand_computed_translation_rotation_and_pan():
    pose = [30.0, 30.0, 0.0, 12.0, 1.0, 1.0, 0.0]
    moved = [33.0, 28.0, 0.0, 12.0, 1.0, 1.0, 0.0]
    scene = _hand_scene("disc", [pose, moved], [[0, 2], [1, 2]])  # camera pans 1 px right
    fwd, alpha = flow(scene, 0), object_layer(scene, 1, 0)[1]
    assert np.all(fwd[alpha] == [3.0, -2.0]) and np.all(fwd[~alpha] == [-1.0, 0.0])
    assert np.all(flow(scene, 1, "backward")[object_layer(scene, 1, 1)[1]] == [-3.0, 2.0])
    turned = [30.0, 30.0, np.pi / 2, 12.0, 1.0, 1.0, 0.0]  # quarter turn about the centre
    f = flow(_hand_scene("square", [pose, turned], [[0, 0], [0, 0]]), 0)
    assert f[30, 38] == pytest.approx([-8.0, 8.0], abs=1e-9)  # (38, 30) -> (30, 38)
    grown = [30.0, 30.0, 0.0, 18.0, 1.0, 1.0, 0.0]  # radius x 1.5 about the centre
    f = flow(_hand_scene("disc", [pose, grown], [[0, 0], [0, 0]]), 0)
    assert f[34, 26] == pytest.approx([-2.0, 2.0], abs=1e-9)  # (26, 34) -> (24, 36)


def _interior(mask: np.ndarray) -> np.ndarray:
    return cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def test_forward_flow_warps_object_layers(default_videos):
    scene, masks = default_videos[0]
    still = copy.deepcopy(scene)  # no illumination or texture drift: the texture is exactly attached
    for obj in still["objects"]:
        for f in obj["frames"]:
            f[5], f[6] = 1.0, 0.0
    landed = matched = total = 0
    for t in range(0, scene["length"] - 1, 4):
        fwd = flow(still, t)
        for obj in still["objects"]:
            i = obj["track_id"]
            rgb0, _ = object_layer(still, i, t)
            rgb1, alpha1 = object_layer(still, i, t + 1)
            ys, xs = np.nonzero(_interior(masks[t][i]["visible"]))  # where this object sets the flow
            qx, qy = np.rint(xs + fwd[ys, xs, 0]).astype(int), np.rint(ys + fwd[ys, xs, 1]).astype(int)
            inside = (qx >= 0) & (qx < 128) & (qy >= 0) & (qy < 128)
            ys, xs, qx, qy = ys[inside], xs[inside], qx[inside], qy[inside]
            total += len(xs)
            landed += int(alpha1[qy, qx].sum())
            diff = np.abs(rgb0[ys, xs].astype(int) - rgb1[qy, qx].astype(int)).max(axis=1)
            matched += int((diff <= 8).sum())
    assert total > 1000
    assert landed / total > 0.995 and matched / total > 0.85


def test_forward_then_backward_flow_is_identity(default_videos):
    scene, masks = default_videos[1]
    errors = []
    for t in range(0, scene["length"] - 1, 5):
        fwd, bwd = flow(scene, t), flow(scene, t + 1, "backward")
        for i in masks[t]:
            ys, xs = np.nonzero(_interior(masks[t][i]["visible"]))
            px, py = xs + fwd[ys, xs, 0], ys + fwd[ys, xs, 1]
            qx, qy = np.rint(px).astype(int), np.rint(py).astype(int)
            ok = (qx >= 0) & (qx < 128) & (qy >= 0) & (qy < 128)
            ok[ok] &= _interior(masks[t + 1][i]["visible"])[qy[ok], qx[ok]]  # same object in front at t+1
            back_x = px[ok] + bwd[qy[ok], qx[ok], 0] - xs[ok]
            back_y = py[ok] + bwd[qy[ok], qx[ok], 1] - ys[ok]
            errors.append(np.hypot(back_x, back_y))
    errors = np.concatenate(errors)
    assert len(errors) > 1000 and errors.max() < 0.25  # only the rounding to a pixel is left, times |A^-1 - I|


def test_hidden_tracks_and_clean_layers(default_videos):
    scene, masks = default_videos[2]
    t = scene["length"] // 2
    frame = render_frame(scene, t).astype(int)
    ids = list(masks[t])
    noise = np.abs(np.random.default_rng([scene["noise"]["seed"], t]).normal(0.0, scene["noise"]["std"], (128, 128, 3)))
    noise *= 255.0
    for i in ids:
        removed = render_frame(scene, t, hidden={i}).astype(int)
        amodal = masks[t][i]["amodal"]
        assert np.array_equal(removed[~amodal], frame[~amodal])
        assert masks[t][i]["visible"].any() == (removed[amodal] != frame[amodal]).any()
        rgb, alpha = object_layer(scene, i, t)
        assert np.array_equal(alpha, amodal) and not rgb[~alpha].any()
        alone = render_frame(scene, t, hidden=set(ids) - {i}).astype(int)  # every other object removed
        assert np.all(np.abs(alone[alpha] - rgb[alpha].astype(int)) <= noise[alpha] + 1)  # the layer + the noise
    empty = render_frame(scene, t, hidden=set(ids)).astype(int)
    assert np.abs(empty - frame).max() > 0


def test_video_statistics_hand_computed():
    seg = {"size": [8, 8], "counts": "x"}  # statistics only look at presence
    a = {"video_id": 1, "segmentations": [seg, None, None, seg], "amodal_segmentations": [seg, seg, None, seg],
         "bboxes": [[0, 0, 4, 4], None, None, [0, 0, 2, 2]], "occlusion": ["none", "severe", None, "slight"],
         "depths": [1.0, 1.0, None, 3.0]}
    b = {"video_id": 1, "segmentations": [seg, seg, seg, seg], "amodal_segmentations": [seg, seg, seg, seg],
         "bboxes": [[2, 2, 4, 4], [0, 0, 1, 1], [0, 0, 1, 1], [4, 4, 2, 2]],
         "occlusion": ["slight", "none", "none", "none"], "depths": [2.0, 2.0, 2.0, 2.0]}
    gt = {"videos": [{"id": 1, "length": 4, "height": 8, "width": 8}], "annotations": [a, b]}
    stats = video_statistics(gt, k=1)
    assert stats["mbor"] == pytest.approx((4 / 28 + 0 + 0 + 0) / 4)
    assert stats["occlusion_shares"] == {"none": 4 / 7, "slight": 2 / 7, "severe": 1 / 7}
    assert stats["objects_per_frame"] == 7 / 4 and stats["visible_objects_per_frame"] == 6 / 4
    assert (stats["entering_events"], stats["leaving_events"]) == (1, 1)
    assert stats["full_occlusion_events"] == 0  # a is hidden in frame 1, then leaves: no reappearance
    assert stats["depth_order_swaps"] == 0  # frames 1 -> 3 are not consecutive (a is out in frame 2)
    a["amodal_segmentations"][2], a["depths"][2], a["segmentations"][2] = seg, 3.0, seg
    a["bboxes"][2], a["occlusion"][2] = [5, 5, 1, 1], "none"
    stats = video_statistics(gt, k=1)
    assert stats["full_occlusion_events"] == 1 and stats["depth_order_swaps"] == 1
    assert stats["tracks_per_video"] == 2 and stats["videos"] == 1 and stats["frames"] == 4
    longer = video_statistics(gt, k=2)  # a's gap is one frame: no event of >= 2
    assert longer["full_occlusion_events"] == 0 and longer["full_occlusion_k"] == 2


def test_bad_input_names_file_and_record(tiny, tmp_path, default_videos):
    gt = read_json(tiny / "annotations" / "val.json")
    del gt["videos"][1]["scene"]["camera"]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(gt))
    with pytest.raises(InputError, match=r"broken\.json: videos\[1\] \(id \d+\): scene lacks \['camera'\]"):
        load_scenes(path)
    scene, _ = default_videos[0]
    with pytest.raises(InputError, match="frame 32: frame index 32 outside 0..31"):
        render_frame(scene, 32)
    with pytest.raises(InputError, match="no forward neighbour"):
        flow(scene, 31)
    with pytest.raises(InputError, match="sideways"):
        flow(scene, 0, "sideways")
    with pytest.raises(InputError, match="track 99"):
        object_layer(scene, 99, 0)
    with pytest.raises(InputError, match=r"annotations\[0\]: video_id 7 is not among the videos"):
        video_statistics({"videos": [], "annotations": [{"video_id": 7}]})
