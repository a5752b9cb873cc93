"""``instseg inpaint`` end to end on a tiny toy video: frames folder and mp4 input, palette and
instance-id masks, and every bad input with its message naming the file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from instseg.cli import main
from instseg.video.data.frames import open_video
from instseg.video.voin.pipeline import FrameMasks, inpaint_video
from instseg.video.voin.runs import load_voin_run
from instseg.video.voin.toy import toy_run, toy_video, write_frames, write_id_masks

torch.set_num_threads(1)
LENGTH, SIZE = 7, (24, 28)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("inpaint")
    video = toy_video(LENGTH, SIZE)
    write_frames(root / "frames", video.frames)
    for fmt in ("palette", "gray8", "gray16"):
        write_id_masks(root / f"masks_{fmt}", video.visible, fmt)
    write_id_masks(root / "amodal", video.amodal, "gray8")
    toy_run(root / "run")
    toy_run(root / "run_no_shape", shape=False)
    return root, video


def _run(capsys, *args):
    code = main(["inpaint", *map(str, args)])
    return code, capsys.readouterr()


def _pngs(out: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted((out / "frames").glob("*.png"))])


def test_frames_folder_palette_masks_end_to_end(data, tmp_path, capsys):
    root, video = data
    out = tmp_path / "out"
    code, cap = _run(capsys, "--checkpoint", root / "run", "--video", root / "frames", "--masks",
                     root / "masks_palette", "--out", out, "--window", 3, "--categories", "1:1,2:3")
    assert code == 0, cap.err
    assert f"{LENGTH} frames in 3 windows" in cap.out
    written = _pngs(out)
    assert [p.name for p in sorted((out / "frames").glob("*.png"))] == [f"{t:05d}.png" for t in range(LENGTH)]
    run = load_voin_run(root / "run")
    expected = np.stack(list(inpaint_video(run, [FrameMasks(f, v) for f, v in zip(video.frames, video.visible)],
                                           [1, 2], 3, None, {1: 1, 2: 3})))
    assert np.array_equal(written, expected)  # the PNGs are the pipeline's frames, losslessly
    mp4 = open_video(out / "inpainted.mp4")
    assert mp4.length == LENGTH and sum(1 for _ in mp4.frames()) == LENGTH
    # instance-id masks, 8 and 16 bit, mean the same objects: the same result
    for fmt in ("gray8", "gray16"):
        code, cap = _run(capsys, "--checkpoint", root / "run", "--video", root / "frames", "--masks",
                         root / f"masks_{fmt}", "--out", out, "--window", 3, "--categories", "1:1,2:3", "--force")
        assert code == 0, cap.err
        assert np.array_equal(_pngs(out), expected)


def test_mp4_input_with_amodal_masks(data, tmp_path, capsys):
    root, video = data
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (SIZE[1], SIZE[0]))
    assert writer.isOpened()
    for frame in video.frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    decoded = np.stack(list(open_video(path).frames()))
    out = tmp_path / "out"
    code, cap = _run(capsys, "--checkpoint", root / "run_no_shape", "--video", path, "--masks", root / "masks_gray16",
                     "--amodal-masks", root / "amodal", "--objects", "2", "--out", out)
    assert code == 0, cap.err
    written = _pngs(out)
    hole = (video.amodal == 2) & (video.visible != 2)
    assert written.shape == decoded.shape and hole.any()
    assert np.array_equal(written[~hole], decoded[~hole])  # only object 2's hole changed
    assert (written[hole] != decoded[hole]).any()


def _expect_error(capsys, data, tmp_path, match: str, names: Path | str, **overrides):
    root, _ = data
    args = {"--checkpoint": root / "run", "--video": root / "frames", "--masks": root / "masks_palette",
            "--out": tmp_path / "out"} | overrides
    flat = [str(x) for kv in args.items() if kv[1] is not None for x in kv]
    code = main(["inpaint", *flat])
    err = capsys.readouterr().err
    assert code == 2 and match in err and str(names) in err, err
    return err


def test_count_and_size_mismatches(data, tmp_path, capsys):
    root, video = data
    short = tmp_path / "short"
    write_id_masks(short, video.visible[:-1])
    _expect_error(capsys, data, tmp_path, f"has {LENGTH} frames but the masks folder has {LENGTH - 1}", short,
                  **{"--masks": short})
    amodal_short = tmp_path / "amodal_short"
    write_id_masks(amodal_short, video.amodal[:-1])
    _expect_error(capsys, data, tmp_path, f"{LENGTH - 1} amodal mask files but {LENGTH} masks", amodal_short,
                  **{"--amodal-masks": amodal_short})
    wrong = tmp_path / "wrong_size"
    paths = write_id_masks(wrong, video.visible)
    Image.fromarray(np.zeros((20, 28), np.uint8)).save(paths[4])
    Image.fromarray(np.zeros((20, 29), np.uint8)).save(paths[5])
    _expect_error(capsys, data, tmp_path, "mask is 28x20 (WxH) but the frames are 28x24", paths[4],
                  **{"--masks": wrong})


def test_unreadable_inputs(data, tmp_path, capsys):
    root, video = data
    frames = tmp_path / "frames"
    paths = write_frames(frames, video.frames)
    paths[3].write_bytes(b"not a png")
    _expect_error(capsys, data, tmp_path, "cannot read the frame", paths[3], **{"--video": frames})
    masks = tmp_path / "masks"
    mask_paths = write_id_masks(masks, video.visible)
    mask_paths[2].write_bytes(b"\x89PNG broken")
    _expect_error(capsys, data, tmp_path, "cannot read the mask", mask_paths[2], **{"--masks": masks})
    rgb = tmp_path / "rgb"
    rgb_paths = write_id_masks(rgb, video.visible)
    Image.fromarray(np.zeros((*SIZE, 3), np.uint8)).save(rgb_paths[1])
    _expect_error(capsys, data, tmp_path, "mode RGB (3 channels) and no palette", rgb_paths[1], **{"--masks": rgb})


def test_other_bad_inputs(data, tmp_path, capsys):
    root, _ = data
    _expect_error(capsys, data, tmp_path, "object id(s) 5 in no mask (ids present: 1, 2)", root / "masks_palette",
                  **{"--objects": "1,5"})
    (tmp_path / "empty").mkdir()
    _expect_error(capsys, data, tmp_path, "holds no frames", tmp_path / "empty", **{"--video": tmp_path / "empty"})
    _expect_error(capsys, data, tmp_path, "no shape model", "--amodal-masks", **{"--checkpoint": root / "run_no_shape"})
    _expect_error(capsys, data, tmp_path, "not a VOIN run directory", tmp_path / "nope",
                  **{"--checkpoint": tmp_path / "nope"})
    _expect_error(capsys, data, tmp_path, "knows categories 0..3", "--categories", **{"--categories": "1:4"})
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    _expect_error(capsys, data, tmp_path, "not empty (pass --force", busy, **{"--out": busy})
    assert (busy / "keep.txt").read_text() == "mine"  # nothing lost


def test_missing_codec_skips_the_mp4_with_a_warning(data, tmp_path, capsys, monkeypatch):
    import instseg.video.viz as viz

    class NoCodec:
        def __init__(self, *args, **kwargs):
            pass

        def write(self, frame):
            raise ValueError("unknown encoder 'libx264'")  # what PyAV raises when the codec is missing

    monkeypatch.setattr(viz, "VideoWriter", NoCodec)
    root, _ = data
    out = tmp_path / "out"
    code, cap = _run(capsys, "--checkpoint", root / "run", "--video", root / "frames", "--masks",
                     root / "masks_palette", "--out", out, "--window", 4)
    assert code == 0 and "warning: no mp4" in cap.err and "libx264" in cap.err
    assert not (out / "inpainted.mp4").exists() and len(list((out / "frames").glob("*.png"))) == LENGTH
