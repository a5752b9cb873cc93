"""Video input for inference: a folder of frames or a video file, read lazily as RGB uint8 frames.

Why lazy: a long video does not fit in memory as a list of frames, so ``instseg track`` streams
it. Video files are decoded by PyAV (its wheel ships FFmpeg's libraries: no system ffmpeg). Every
problem the user can fix (a missing path, an empty folder, an unreadable file, frames of mixed
sizes) is an :class:`~instseg.errors.InputError` naming the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from instseg.errors import InputError

FRAME_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif"})


def _natural_key(path: Path) -> list:
    """frame2.png before frame10.png, as a person numbers frames."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


@dataclass(frozen=True)
class VideoSource:
    """A video to read: ``frames()`` yields its frames in order; ``length`` is None when a
    container does not say how many frames it holds."""

    path: Path
    files: tuple[Path, ...] | None  # the frame files of a folder; None for a video file
    length: int | None
    size: tuple[int, int]  # (height, width) of the first frame
    fps: float

    @property
    def name(self) -> str:
        return self.path.stem if self.files is None else self.path.name

    def file_names(self) -> list[str]:
        """Names of the frames as a YouTube-VIS ``file_names`` list (frame indices for a video file)."""
        if self.files is not None:
            return [f"{self.name}/{f.name}" for f in self.files]
        return [f"{self.name}/{t:05d}" for t in range(self.length or 0)]

    def frames(self) -> Iterator[np.ndarray]:
        if self.files is not None:
            for path in self.files:
                frame = read_image(path)
                if frame.shape[:2] != self.size:
                    raise InputError(f"frame is {frame.shape[1]}x{frame.shape[0]}, the first frame "
                                     f"{self.files[0].name} is {self.size[1]}x{self.size[0]}: mixed frame sizes",
                                     path)
                yield frame
            return
        yield from _decode(self.path, self.size)


def read_image(path: Path) -> np.ndarray:
    """One frame file as RGB uint8; an unreadable one is an InputError naming it."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"cannot read the frame as an image ({exc.__class__.__name__})", path) from exc


def _decode(path: Path, size: tuple[int, int]) -> Iterator[np.ndarray]:
    import av

    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                pixels = frame.to_ndarray(format="rgb24")
                if pixels.shape[:2] != size:
                    raise InputError(f"frame {frame.index} changes size to {pixels.shape[1]}x{pixels.shape[0]}", path)
                yield pixels
    except av.FFmpegError as exc:
        raise InputError(f"cannot decode the video ({exc})", path) from exc


def _probe_video(path: Path) -> VideoSource:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError("the file has no video stream", path)
            stream = container.streams.video[0]
            first = next(container.decode(video=0), None)
            if first is None:
                raise InputError("the video has no frames", path)
            length = int(stream.frames) if stream.frames else None
            fps = float(stream.average_rate) if stream.average_rate else 25.0
            return VideoSource(path, None, length, (first.height, first.width), fps)
    except av.FFmpegError as exc:
        raise InputError(f"cannot open the video ({exc})", path) from exc


def open_video(path: str | Path, fps: float = 10.0) -> VideoSource:
    """A folder of frames (sorted by name, numbers in natural order) or a video file.
    ``fps`` is the frame rate given to a folder (a video file carries its own)."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such video file or frame folder", path)
    if path.is_dir():
        files = tuple(sorted((p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES), key=_natural_key))
        if not files:
            raise InputError(f"the folder holds no frames (looked for {', '.join(sorted(FRAME_SUFFIXES))})", path)
        first = read_image(files[0])
        return VideoSource(path, files, len(files), first.shape[:2], fps)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"not a video file or frame folder (video suffixes: {', '.join(sorted(VIDEO_SUFFIXES))})",
                         path)
    return _probe_video(path)
