"""``instseg track`` on a video file and a frame folder, with a detector run (mask-IoU tracker)
and a tracker run (quasi-dense tracker with an embedding head): valid YouTube-VIS results, MOTS
rows and an overlay video; bad inputs end with exit 2 and one line naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from instseg.cli import main
from instseg.engine.runs import RunSpec, save_spec
from instseg.video.data.frames import open_video
from instseg.video.data.kitti_mots import read_kitti_mots
from instseg.video.models.trackers.embedding import QuasiDenseEmbedHead
from instseg.video.tracking.runs import TrackerSpec, load_tracker_run, save_tracker_run
from instseg.video.viz import VideoWriter

FRAMES, HEIGHT, WIDTH = 6, 48, 64


def _frames() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    background = rng.integers(0, 80, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    out = []
    for t in range(FRAMES):
        frame = background.copy()
        frame[8:28, 5 + 4 * t:25 + 4 * t] = (230, 200, 40)
        frame[20:44, 40 - 2 * t:58 - 2 * t] = (40, 120, 230)
        out.append(frame)
    return out


@pytest.fixture(scope="module")
def detector_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained detector whose class biases make category 4 confident (scores ~0.99) and
    whose mask biases fill each box: tracks to write, without training."""
    run = tmp_path_factory.mktemp("detector")
    spec = RunSpec("frcnn", "maskrcnn", 3, {1: 4, 2: 5, 3: 6},
                   {"mask_head": "fcn", "head_kwargs": {"conv_channels": 8}, "fpn_channels": 8, "min_size": 48,
                    "max_size": 64, "box_score_thresh": 0.0, "box_detections_per_img": 5})
    torch.manual_seed(0)
    save_spec(spec, run)
    (run / "checkpoints").mkdir()
    state = spec.build_model().state_dict()
    state["roi_heads.box_predictor.cls_score.bias"][1] = 6.0
    state["roi_heads.mask_branch.head.predictor.predictor.bias"].fill_(4.0)
    torch.save(state, run / "checkpoints" / "model_final.pt")
    return run


@pytest.fixture(scope="module")
def tracker_run(tmp_path_factory: pytest.TempPathFactory, detector_run: Path) -> Path:
    run = tmp_path_factory.mktemp("tracker")
    kwargs = {"in_channels": 8, "conv_channels": 8, "fc_channels": 16, "embed_dim": 8}
    save_tracker_run(run, TrackerSpec("quasi_dense", str(detector_run), {},
                                      kwargs))
    (run / "checkpoints").mkdir()
    torch.manual_seed(1)
    torch.save(QuasiDenseEmbedHead(**kwargs).state_dict(), run / "checkpoints" / "model_final.pt")
    return run


@pytest.fixture(scope="module")
def mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with VideoWriter(path, fps=5) as writer:
        for frame in _frames():
            writer.write(frame)
    return path


def _decode(rle: dict) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})


def test_track_an_mp4_writes_results_mots_rows_and_an_overlay(tmp_path: Path, detector_run: Path, mp4: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "results.json"
    code = main(["track", "--checkpoint", str(detector_run), "--video", str(mp4), "--out", str(out),
                 "--mots-out", str(tmp_path / "mots"), "--viz", str(tmp_path / "overlay.mp4")])
    assert code == 0, capsys.readouterr().err
    results = json.loads(out.read_text())
    described = json.loads(out.with_suffix(".video.json").read_text())
    assert described["videos"][0] | {"file_names": None} == {"id": 1, "name": "clip", "width": WIDTH, "height": HEIGHT,
                                                             "length": FRAMES, "file_names": None}
    assert len(described["videos"][0]["file_names"]) == FRAMES
    assert results, "a confident detector must give tracks"
    for record in results:
        assert set(record) == {"video_id", "category_id", "score", "segmentations", "track_id"}
        assert record["video_id"] == 1 and record["category_id"] in (4, 5, 6) and 0 <= record["score"] <= 1
        assert len(record["segmentations"]) == FRAMES
        present = [s for s in record["segmentations"] if s is not None]
        assert present and all(_decode(s).shape == (HEIGHT, WIDTH) for s in present)
    assert len({r["track_id"] for r in results}) == len(results)
    rows = read_kitti_mots(tmp_path / "mots" / "clip.txt")  # validates: no overlaps, ids class*1000+k
    assert rows and {row.frame for row in rows} <= set(range(FRAMES))
    overlay = open_video(tmp_path / "overlay.mp4")
    assert overlay.size == (HEIGHT, WIDTH) and len(list(overlay.frames())) == FRAMES


def test_track_a_frame_folder_with_the_quasi_dense_tracker(tmp_path: Path, tracker_run: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "clip"
    folder.mkdir()
    for t, frame in enumerate(_frames()):
        Image.fromarray(frame).save(folder / f"{t}.png")
    loaded = load_tracker_run(tracker_run)
    assert loaded.embed_head is not None and type(loaded.tracker).__name__ == "QuasiDenseTracker"
    out = tmp_path / "results.json"
    assert main(["track", "--checkpoint", str(tracker_run), "--video", str(folder), "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results and all(len(r["segmentations"]) == FRAMES for r in results)
    names = json.loads(out.with_suffix(".video.json").read_text())["videos"][0]["file_names"]
    assert names == [f"clip/{t}.png" for t in range(FRAMES)]
    assert "6 frames" in capsys.readouterr().out


def test_a_detector_run_tracks_with_the_mask_iou_tracker(detector_run: Path) -> None:
    loaded = load_tracker_run(detector_run)
    assert loaded.embed_head is None and type(loaded.tracker).__name__ == "MaskIoUTracker"


@pytest.mark.parametrize("case", ["missing", "empty_folder", "garbage_mp4", "mixed_sizes", "not_a_run",
                                  "bad_tracker_json"])
def test_bad_inputs_exit_2_naming_the_file(tmp_path: Path, detector_run: Path, mp4: Path, case: str,
                                           capsys: pytest.CaptureFixture) -> None:
    video, checkpoint = mp4, detector_run
    if case == "missing":
        video = culprit = tmp_path / "nope.mp4"
    elif case == "empty_folder":
        video = culprit = tmp_path / "empty"
        video.mkdir()
    elif case == "garbage_mp4":
        video = culprit = tmp_path / "garbage.mp4"
        video.write_bytes(b"\x00\x01 not a video" * 40)
    elif case == "mixed_sizes":
        video = tmp_path / "mixed"
        video.mkdir()
        Image.fromarray(_frames()[0]).save(video / "0.png")
        Image.fromarray(_frames()[1][:40]).save(video / "1.png")
        culprit = video / "1.png"
    elif case == "not_a_run":
        checkpoint = culprit = tmp_path / "run"
        checkpoint.mkdir()
    else:
        checkpoint = tmp_path / "run"
        checkpoint.mkdir()
        culprit = checkpoint / "tracker.json"
        culprit.write_text(json.dumps({"tracker": "quasi_dense", "detector_run": str(detector_run),
                                       "config": {"no_such_setting": 1}}))
    code = main(["track", "--checkpoint", str(checkpoint), "--video", str(video), "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("instseg: error: ")
    if case == "bad_tracker_json":
        assert "no_such_setting" in lines[0]
    else:
        assert str(culprit) in lines[0]


def test_track_an_mp4_written_from_smoke_benchmark_frames(tmp_path: Path, smoke_video_dir: Path,
                                                          smoke_runs_dir: Path) -> None:
    """The acceptance case: a smoke video written to mp4, tracked by the smoke detector run."""
    from instseg.video.data.ytvis import load_ytvis_gt, validate_ytvis_results

    gt = load_ytvis_gt(smoke_video_dir / "annotations" / "val.json")
    video = gt["videos"][0]
    clip = tmp_path / f"{video['name']}.mp4"
    with VideoWriter(clip, fps=10) as writer:
        for name in video["file_names"]:
            writer.write(np.asarray(Image.open(smoke_video_dir / "frames" / name).convert("RGB")))
    out = tmp_path / "results.json"
    assert main(["track", "--checkpoint", str(smoke_runs_dir / "frcnn"), "--video", str(clip), "--out", str(out),
                 "--mots-out", str(tmp_path / "mots"), "--viz", str(tmp_path / "overlay.mp4")]) == 0
    described = json.loads(out.with_suffix(".video.json").read_text())
    assert described["videos"][0]["length"] == video["length"]
    validate_ytvis_results(json.loads(out.read_text()), described | {"categories": gt["categories"]}, out)
    read_kitti_mots(tmp_path / "mots" / f"{video['name']}.txt")
    assert len(list(open_video(tmp_path / "overlay.mp4").frames())) == video["length"]
