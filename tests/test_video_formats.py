"""Video annotation formats: KITTI-MOTS/MOTSChallenge txt, YouTube-VIS JSON, BDD100K seg_track.

Every reader error must name the file and the record (line, video, frame, annotation, label)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from instseg.data.coco_json import mask_to_rle, segmentation_to_mask
from instseg.errors import InputError
from instseg.video.data.bdd import load_bdd_seg_track
from instseg.video.data.kitti_mots import MotsRow, read_kitti_mots, read_mots_dir, write_kitti_mots
from instseg.video.data.ytvis import (check_frames_exist, load_ytvis_gt, load_ytvis_results, validate_ytvis_gt,
                                      validate_ytvis_results, write_ytvis_results)
from instseg.video.evaluation.ytvis import evaluate_vis

H, W = 4, 6


def _rle(*pixels: tuple[int, int], h: int = H, w: int = W) -> dict:
    m = np.zeros((h, w), np.uint8)
    for y, x in pixels:
        m[y, x] = 1
    return mask_to_rle(m)


# ----------------------------------------------------------------------------- KITTI-MOTS

def _line(frame: int, obj: int, cls: int, rle: dict) -> str:
    return f"{frame} {obj} {cls} {rle['size'][0]} {rle['size'][1]} {rle['counts']}"


def test_mots_round_trip_sorted_atomic(tmp_path: Path) -> None:
    a, b, c = _rle((0, 0)), _rle((1, 1), (1, 2)), _rle((3, 5))
    rows = [(1, 2001, 2, c), (0, 1002, 1, b), (0, 1001, 1, a), (1, 10000, 10, a)]
    out = tmp_path / "new" / "dir" / "0001.txt"
    write_kitti_mots(out, rows)
    assert out.read_text().splitlines() == [_line(0, 1001, 1, a), _line(0, 1002, 1, b), _line(1, 2001, 2, c),
                                            _line(1, 10000, 10, a)]
    assert [p.name for p in out.parent.iterdir()] == ["0001.txt"]  # no temporary left behind
    got = read_kitti_mots(out)
    assert got == [MotsRow(*r) for r in sorted(rows, key=lambda r: (r[0], r[1]))]
    assert segmentation_to_mask(got[1].rle, H, W)[1, 2] == 1


def test_mots_empty_file_has_no_rows(tmp_path: Path) -> None:
    (tmp_path / "e.txt").write_text("")
    assert read_kitti_mots(tmp_path / "e.txt") == []


def test_mots_dir_by_sequence(tmp_path: Path) -> None:
    write_kitti_mots(tmp_path / "0002.txt", [(0, 2001, 2, _rle((0, 0)))])
    (tmp_path / "0001.txt").write_text("")
    (tmp_path / "notes.md").write_text("x")
    assert {k: len(v) for k, v in read_mots_dir(tmp_path).items()} == {"0001": 0, "0002": 1}
    with pytest.raises(InputError, match="not found"):
        read_mots_dir(tmp_path / "missing")


GOOD = _rle((0, 0))
BAD_LINES = {
    "columns": (f"0 1001 1 {H} {W}", r"line 2: expected 6 columns"),
    "integers": (f"0 1001 x {H} {W} {GOOD['counts']}", r"line 2: .*must be integers"),
    "size": (f"1 1001 1 5 {W} {_rle((0, 0), h=5)['counts']}", r"line 2: mask size 5x6 differs from 4x6 at line 1"),
    "rle": (f"1 1001 1 {H} {W} zz!!", r"line 2: undecodable RLE"),
    "overlap": (_line(0, 1002, 1, _rle((0, 0), (2, 2))), r"line 2: masks of objects 1001 \(line 1\) and 1002 overlap"),
    "ignore_overlap": (_line(0, 10000, 10, _rle((0, 0))), r"line 2: masks of objects 1001 .* and 10000 overlap"),
    "duplicate": (_line(0, 1001, 1, _rle((3, 3))), r"line 2: obj_id 1001 appears twice in frame 0 \(first at line 1\)"),
    "class": (_line(1, 2001, 1, GOOD), r"line 2: obj_id 2001 // 1000 != class_id 1"),
    "negative_frame": (_line(-1, 1001, 1, GOOD), r"line 2: frame must be >= 0"),
}


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_mots_errors_name_file_and_line(tmp_path: Path, kind: str) -> None:
    line, message = BAD_LINES[kind]
    path = tmp_path / "seq.txt"
    path.write_text(_line(0, 1001, 1, GOOD) + "\n" + line + "\n")
    with pytest.raises(InputError, match=message) as info:
        read_kitti_mots(path)
    assert str(info.value).startswith(str(path))


def test_mots_ignore_region_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "seq.txt"
    path.write_text(_line(0, 1001, 1, GOOD) + "\n\n" + _line(0, 10000, 10, _rle((2, 2))) + "\n")
    assert [r.obj_id for r in read_kitti_mots(path)] == [1001, 10000]
    with pytest.raises(InputError, match="file not found"):
        read_kitti_mots(tmp_path / "none.txt")


# ----------------------------------------------------------------------------- YouTube-VIS

def _gt() -> dict:
    return {
        "videos": [{"id": 5, "width": W, "height": H, "length": 3, "file_names": ["v/0.jpg", "v/1.jpg", "v/2.jpg"]},
                   {"id": 6, "width": W, "height": H, "file_names": ["w/0.jpg"]}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [
            {"id": 11, "video_id": 5, "category_id": 1, "iscrowd": 0,
             "segmentations": [_rle((0, 0)), None, {"size": [H, W], "counts": [0, 2, 22]}],
             "bboxes": [[0, 0, 1, 1], None, [0, 0, 1, 2]], "areas": [1, None, 2],
             "amodal_segmentations": [[[0, 0, 2, 0, 2, 2]], None, _rle((0, 0))],
             "occlusion": ["no_occlusion", None, "severe"], "occlusion_ratios": [0.0, None, 0.5]},
            {"id": 12, "video_id": 6, "category_id": 2, "segmentations": [_rle((1, 1))]},
        ],
    }


def test_ytvis_gt_is_normalised(tmp_path: Path) -> None:
    path = tmp_path / "gt.json"
    gt = _gt()
    path.write_text(json.dumps(gt))
    got = load_ytvis_gt(path)
    ann = got["annotations"][0]
    assert all(isinstance(s["counts"], str) for s in ann["segmentations"] if s)
    assert segmentation_to_mask(ann["segmentations"][2], H, W)[:, 0].tolist() == [1, 1, 0, 0]
    assert isinstance(ann["amodal_segmentations"][0]["counts"], str)
    assert ann["occlusion"] == ["none", None, "severe"]
    assert got["videos"][1]["length"] == 1 and got["annotations"][1]["iscrowd"] == 0
    assert json.loads(path.read_text()) == gt  # the file's dict is not changed: a copy is returned


def _mutate(edit) -> dict:
    gt = _gt()
    edit(gt)
    return gt


GT_ERRORS = {
    "missing_key": (lambda g: g.pop("videos"), r"missing or non-list top-level key 'videos'"),
    "length": (lambda g: g["annotations"][0]["bboxes"].pop(),
               r"annotations\[0\] \(id=11, video_id=5\): 'bboxes' has 2 entries but the video has 3 frames"),
    "seg_length": (lambda g: g["annotations"][0]["segmentations"].append(None),
                   r"annotations\[0\] \(id=11, video_id=5\): 'segmentations' has 4 entries"),
    "unknown_video": (lambda g: g["annotations"][1].update(video_id=9),
                      r"annotations\[1\] \(id=12, video_id=9\): annotation references an unknown video_id"),
    "unknown_category": (lambda g: g["annotations"][1].update(category_id=3),
                         r"annotations\[1\] \(id=12, video_id=6\): .*unknown category_id 3"),
    "rle_size": (lambda g: g["annotations"][0]["segmentations"].__setitem__(1, _rle((0, 0), h=5)),
                 r"annotations\[0\] \(id=11, video_id=5\), frame 1: 'segmentations' RLE size \[5, 6\] differs"),
    "duplicate_ann": (lambda g: g["annotations"][1].update(id=11), r"annotations\[1\] \(id=11.*duplicate annotation id"),
    "duplicate_video": (lambda g: g["videos"][1].update(id=5), r"videos\[1\] \(id=5\): duplicate video id"),
    "bbox": (lambda g: g["annotations"][0]["bboxes"].__setitem__(2, [0, 0, -1, 2]),
             r"annotations\[0\] \(id=11, video_id=5\), frame 2: zero-area box"),
    "file_names": (lambda g: g["videos"][0]["file_names"].pop(), r"videos\[0\] \(id=5\): 'file_names' has 2 entries"),
    "no_segmentations": (lambda g: g["annotations"][1].pop("segmentations"),
                         r"annotations\[1\] \(id=12, video_id=6\): annotation has no 'segmentations'"),
    "no_id": (lambda g: g["annotations"][1].pop("id"), r"annotations\[1\] \(id=None, video_id=6\): .*no 'id'"),
    "occlusion": (lambda g: g["annotations"][0]["occlusion"].__setitem__(1, "partly"),
                  r"annotations\[0\] \(id=11, video_id=5\), frame 1: 'occlusion' must be one of"),
    "area": (lambda g: g["annotations"][0]["areas"].__setitem__(0, float("nan")),
             r"annotations\[0\] \(id=11, video_id=5\), frame 0: 'areas' must be a finite number"),
    "polygon": (lambda g: g["annotations"][0]["segmentations"].__setitem__(1, [[0, 0, 1]]),
                r"annotations\[0\] \(id=11, video_id=5\), frame 1: 'segmentations' polygon 0 has 1.5 points"),
}


@pytest.mark.parametrize("kind", sorted(GT_ERRORS))
def test_ytvis_gt_errors_name_file_and_record(tmp_path: Path, kind: str) -> None:
    edit, message = GT_ERRORS[kind]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(_mutate(edit), allow_nan=True))
    with pytest.raises(InputError, match=message) as info:
        load_ytvis_gt(path)
    assert str(info.value).startswith(f"{path}: ")


def _results() -> list[dict]:
    return [{"video_id": 5, "category_id": 1, "score": 0.9, "segmentations": [_rle((0, 0)), None, _rle((3, 0))],
             "track_id": 4},
            {"video_id": 6, "category_id": 2, "score": 0.3, "segmentations": [{"size": [H, W], "counts": [7, 1, 16]}]}]


RESULT_ERRORS = {
    "unknown_video": (lambda r: r[1].update(video_id=99), r"results\[1\] \(video_id=99\): result for video 99"),
    "frames": (lambda r: r[0]["segmentations"].pop(), r"results\[0\] \(video_id=5\): 'segmentations' has 2 entries"),
    "score": (lambda r: r[0].update(score=float("inf")), r"results\[0\] \(video_id=5\): .*finite numeric 'score'"),
    "category": (lambda r: r[0].update(category_id=7), r"results\[0\] \(video_id=5\): .*unknown category_id 7"),
    "rle_size": (lambda r: r[0]["segmentations"].__setitem__(2, _rle((0, 0), w=7)),
                 r"results\[0\] \(video_id=5\), frame 2: 'segmentations' RLE size \[4, 7\]"),
}


@pytest.mark.parametrize("kind", sorted(RESULT_ERRORS))
def test_ytvis_result_errors_name_file_and_index(tmp_path: Path, kind: str) -> None:
    edit, message = RESULT_ERRORS[kind]
    gt = validate_ytvis_gt(_mutate(lambda g: None))
    results = _results()
    edit(results)
    path = tmp_path / "res.json"
    path.write_text(json.dumps(results, allow_nan=True))
    with pytest.raises(InputError, match=message) as info:
        load_ytvis_results(path, gt)
    assert str(info.value).startswith(f"{path}: ")


def test_ytvis_results_round_trip(tmp_path: Path) -> None:
    gt = validate_ytvis_gt(_mutate(lambda g: None))
    results = validate_ytvis_results(_results(), gt)
    assert isinstance(results[1]["segmentations"][0]["counts"], str) and results[0]["track_id"] == 4
    out = tmp_path / "sub" / "res.json"
    write_ytvis_results(out, results)
    assert [p.name for p in out.parent.iterdir()] == ["res.json"]
    assert load_ytvis_results(out, gt) == results
    with pytest.raises(InputError, match="JSON list"):
        validate_ytvis_results({"annotations": []}, gt, "r.json")


def test_check_frames_exist(tmp_path: Path) -> None:
    gt = validate_ytvis_gt(_mutate(lambda g: None))
    for name in ("v/0.jpg", "v/1.jpg", "v/2.jpg", "w/0.jpg"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    check_frames_exist(gt, tmp_path, "gt.json")
    (tmp_path / "v/1.jpg").unlink()
    with pytest.raises(InputError, match=r"gt.json: videos\[0\] \(id=5\), frame 1: missing frame file"):
        check_frames_exist(gt, tmp_path, "gt.json")


# ----------------------------------------------------------------------------- BDD100K

def _bdd_frame(video: str, index: int, labels: list[dict]) -> dict:
    return {"name": f"{video}-{index + 1:07d}.jpg", "videoName": video, "frameIndex": index, "labels": labels}


def _label(label_id: str, category: str, *pixels, crowd: bool = False, h: int = H) -> dict:
    return {"id": label_id, "category": category,
            "attributes": {"occluded": False, "truncated": False, "crowd": crowd}, "rle": _rle(*pixels, h=h)}


def _bdd_video() -> list[dict]:
    return [_bdd_frame("b1", 1, [_label("7", "car", (1, 1)), _label("9", "person", (2, 2), crowd=True)]),
            _bdd_frame("b1", 0, [_label("7", "car", (0, 0), (0, 1))]),
            _bdd_frame("b1", 2, [_label("8", "other vehicle", (3, 3))])]


def test_bdd_tracks_by_label_id(tmp_path: Path) -> None:
    (tmp_path / "b1.json").write_text(json.dumps(_bdd_video()))
    (tmp_path / "a0.json").write_text(json.dumps({"frames": [_bdd_frame("a0", 0, [])]}))
    gt = load_bdd_seg_track(tmp_path)
    assert [v["name"] for v in gt["videos"]] == ["a0", "b1"]
    b1 = gt["videos"][1]
    assert (b1["height"], b1["width"], b1["length"]) == (H, W, 3)
    assert b1["file_names"] == ["b1/b1-0000001.jpg", "b1/b1-0000002.jpg", "b1/b1-0000003.jpg"]
    assert gt["videos"][0]["height"] == 720  # no labels: BDD100K's frame size
    tracks = {a["track_id"]: a for a in gt["annotations"]}
    assert [c["name"] for c in gt["categories"]][2] == "car"
    car = tracks["7"]
    assert car["category_id"] == 3 and car["iscrowd"] == 0 and car["areas"] == [2, 1, None]
    assert car["bboxes"][0] == [0.0, 0.0, 2.0, 1.0] and car["segmentations"][2] is None
    assert tracks["9"]["category_id"] == 1 and tracks["9"]["iscrowd"] == 1  # crowd
    assert tracks["8"]["category_id"] == 3 and tracks["8"]["iscrowd"] == 1  # other vehicle: ignored car
    assert validate_ytvis_gt(gt)["annotations"][0]["segmentations"] == gt["annotations"][0]["segmentations"]
    perfect = [{"video_id": a["video_id"], "category_id": a["category_id"], "score": 1.0,
                "segmentations": a["segmentations"]} for a in gt["annotations"]]
    assert evaluate_vis(gt, perfect)["AP"] == pytest.approx(1.0, abs=1e-12)


BDD_ERRORS = {
    "category": (lambda f: f[0]["labels"].append(_label("3", "tram", (3, 0))),
                 r"frames\[0\] \(name='b1-0000002.jpg', videoName='b1'\), label id='3': unknown category 'tram'"),
    "duplicate": (lambda f: f[0]["labels"].append(_label("7", "car", (3, 0))),
                  r"frames\[0\] .*label id='7': label id appears twice"),
    "size": (lambda f: f[2]["labels"].append(_label("5", "car", (0, 0), h=5)),
             r"frames\[2\] .*label id='5': RLE size \[5, 6\] differs from \[4, 6\]"),
    "frame_index": (lambda f: f[1].pop("frameIndex"), r"frames\[1\] \(name='b1-0000001.jpg', .*needs 'frameIndex'"),
    "repeat_index": (lambda f: f[2].update(frameIndex=1), r"frames\[2\] .*frameIndex 1 of video 'b1' already used"),
    "changes_category": (lambda f: f[1]["labels"][0].update(category="bus"),
                         r"frames\[0\] .*label id='7': category 'car' here but 'bus' at frames\[1\]"),
    "no_rle": (lambda f: f[1]["labels"][0].pop("rle"), r"frames\[1\] .*label id='7': label has no 'rle'"),
}


@pytest.mark.parametrize("kind", sorted(BDD_ERRORS))
def test_bdd_errors_name_file_frame_and_label(tmp_path: Path, kind: str) -> None:
    edit, message = BDD_ERRORS[kind]
    frames = _bdd_video()
    edit(frames)
    path = tmp_path / "b1.json"
    path.write_text(json.dumps(frames))
    with pytest.raises(InputError, match=message) as info:
        load_bdd_seg_track(path)
    assert str(info.value).startswith(f"{path}: ")


def test_bdd_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_bdd_seg_track(tmp_path / "x.json")
    with pytest.raises(InputError, match="no .json"):
        load_bdd_seg_track(tmp_path)
