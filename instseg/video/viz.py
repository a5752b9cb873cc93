"""Tracks drawn on frames, and an overlay video written with PyAV (FFmpeg's libraries from its
wheel, no system ffmpeg): what ``instseg track --viz`` writes.

A track keeps its colour for the whole video (drawn from its id, not from its rank in a frame),
so an identity switch shows as a colour change.
"""

from __future__ import annotations

import colorsys
from os import PathLike
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A bright RGB colour fixed by the track id (golden-ratio hues: neighbouring ids differ)."""
    hue = (track_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_tracks(frame: np.ndarray, masks: np.ndarray, track_ids: np.ndarray, alpha: float = 0.5,
                labels: list[str] | None = None) -> np.ndarray:
    """``frame`` (HxWx3 uint8) with each mask (NxHxW bool) blended in its track's colour and the
    track id (and label) written at the mask's top; ids < 0 (not output by the tracker) are skipped."""
    out = frame.astype(np.float32)
    for k, track_id in enumerate(int(t) for t in track_ids):
        if track_id < 0 or not masks[k].any():
            continue
        colour = np.array(track_colour(track_id), dtype=np.float32)
        out[masks[k]] = (1 - alpha) * out[masks[k]] + alpha * colour
    out = np.clip(out, 0, 255).astype(np.uint8)
    for k, track_id in enumerate(int(t) for t in track_ids):
        if track_id < 0 or not masks[k].any():
            continue
        ys, xs = np.nonzero(masks[k])
        text = str(track_id) if labels is None else f"{track_id} {labels[k]}"
        cv2.putText(out, text, (int(xs.min()), max(int(ys.min()) - 1, 7)), cv2.FONT_HERSHEY_PLAIN, 0.6,
                    track_colour(track_id), 1, cv2.LINE_AA)
    return out


class VideoWriter:
    """Writes RGB uint8 frames to an H.264 mp4 (odd sizes padded to even, as yuv420p needs).
    Use as a context manager; the file is complete only after ``close``."""

    def __init__(self, path: str | PathLike, fps: float = 10.0) -> None:
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), "w")
        self._fps = fps
        self._stream = None

    def write(self, frame: np.ndarray) -> None:
        import av

        height, width = frame.shape[:2]
        padded = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        if self._stream is None:
            from fractions import Fraction

            self._stream = self._container.add_stream("libx264", rate=Fraction(self._fps).limit_denominator(1000))
            self._stream.width, self._stream.height = padded.shape[1], padded.shape[0]
            self._stream.pix_fmt = "yuv420p"
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(padded), format="rgb24")):
            self._container.mux(packet)

    def close(self) -> None:
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
