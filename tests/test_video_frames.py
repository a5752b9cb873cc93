"""Video input and the overlay writer: frame folders in natural order, mp4 files through PyAV
(written by our own VideoWriter and read back), and one clear error per bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instseg.errors import InputError
from instseg.video.data.frames import open_video
from instseg.video.viz import VideoWriter, draw_tracks, track_colour


def _frames(count: int, size: tuple[int, int] = (48, 64)) -> list[np.ndarray]:
    """Frames with a bright square moving right: smooth enough that H.264 keeps them close."""
    out = []
    for t in range(count):
        frame = np.full((*size, 3), 40, dtype=np.uint8)
        frame[10:26, 4 + 3 * t:20 + 3 * t] = (220, 180, 60)
        out.append(frame)
    return out


def _write_folder(folder: Path, frames: list[np.ndarray], names: list[str]) -> None:
    folder.mkdir(parents=True)
    for frame, name in zip(frames, names):
        Image.fromarray(frame).save(folder / name)


def test_folder_frames_come_in_natural_order(tmp_path: Path) -> None:
    frames = _frames(12)
    names = [f"frame{t}.png" for t in range(12)]  # frame10 after frame9, not after frame1
    _write_folder(tmp_path / "clip", frames, names)
    video = open_video(tmp_path / "clip", fps=5)
    assert (video.length, video.size, video.fps, video.name) == (12, (48, 64), 5, "clip")
    assert video.file_names()[:3] == ["clip/frame0.png", "clip/frame1.png", "clip/frame2.png"]
    assert video.file_names()[10] == "clip/frame10.png"
    for got, want in zip(video.frames(), frames, strict=True):
        np.testing.assert_array_equal(got, want)


def test_mp4_round_trip_through_video_writer(tmp_path: Path) -> None:
    frames = _frames(9)
    path = tmp_path / "clip.mp4"
    with VideoWriter(path, fps=8) as writer:
        for frame in frames:
            writer.write(frame)
    video = open_video(path)
    assert video.size == (48, 64) and video.name == "clip" and video.fps == pytest.approx(8)
    decoded = list(video.frames())
    assert len(decoded) == 9 and video.length in (None, 9)
    error = np.mean([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(decoded, frames)])
    assert error < 6  # lossy, but the same picture


def test_odd_frame_sizes_are_padded_to_even(tmp_path: Path) -> None:
    path = tmp_path / "odd.mp4"
    with VideoWriter(path) as writer:
        for frame in _frames(3, size=(33, 47)):
            writer.write(frame)
    assert open_video(path).size == (34, 48)


@pytest.mark.parametrize("case", ["missing", "empty_folder", "not_video", "garbage_mp4", "mixed_sizes",
                                  "broken_frame"])
def test_bad_video_input_names_the_file(tmp_path: Path, case: str) -> None:
    if case == "missing":
        path = tmp_path / "nope.mp4"
    elif case == "empty_folder":
        path = tmp_path / "empty"
        path.mkdir()
        (path / "notes.txt").write_text("no frames here")
    elif case == "not_video":
        path = tmp_path / "table.csv"
        path.write_text("a,b\n")
    elif case == "garbage_mp4":
        path = tmp_path / "broken.mp4"
        path.write_bytes(b"\x00not an mp4 at all" * 20)
    elif case == "mixed_sizes":
        path = tmp_path / "mixed"
        _write_folder(path, [_frames(1)[0], _frames(1, size=(40, 64))[0]], ["00000.png", "00001.png"])
    else:
        path = tmp_path / "broken_frame"
        _write_folder(path, _frames(1), ["00000.png"])
        (path / "00001.png").write_bytes(b"not a png")
    with pytest.raises(InputError) as info:
        list(open_video(path).frames())
    message = str(info.value)
    culprit = {"mixed_sizes": path / "00001.png", "broken_frame": path / "00001.png"}.get(case, path)
    assert str(culprit) in message and "\n" not in message


def test_track_colours_are_stable_and_neighbours_differ() -> None:
    assert track_colour(7) == track_colour(7)
    assert len({track_colour(t) for t in range(1, 30)}) == 29


def test_draw_tracks_paints_masks_in_their_track_colour_and_skips_untracked() -> None:
    frame = np.zeros((32, 32, 3), dtype=np.uint8)
    masks = np.zeros((2, 32, 32), dtype=bool)
    masks[0, 16:30, 2:12] = True
    masks[1, 16:30, 20:30] = True
    out = draw_tracks(frame, masks, np.array([3, -1]), alpha=1.0)
    np.testing.assert_array_equal(out[28, 6], track_colour(3))
    np.testing.assert_array_equal(out[28, 25], (0, 0, 0))
