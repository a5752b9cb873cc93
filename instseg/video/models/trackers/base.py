"""The tracker contract (as detectron2's ``BaseTracker``): ``reset`` starts a video, ``update``
takes one frame's detections and returns a track id per detection.

Ids are positive, unique within a frame, stable across frames and never reused within a video;
-1 means "not output" (too weak to start a track and matched to none). Detections are a dict of
``boxes`` [N,4] xyxy, ``scores`` [N], ``labels`` [N] int64 category ids, ``masks`` [N,H,W] bool
and, for appearance trackers, ``embeddings`` [N,D].
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import fields
from typing import Any, TypeVar

from torch import Tensor

from instseg.errors import InputError

C = TypeVar("C")


def config_from_dict(cls: type[C], values: dict[str, Any], record: str) -> C:
    """A frozen config dataclass from a params dict; unknown keys are an error (a typo in
    params.yaml must not silently fall back to a default)."""
    unknown = set(values) - {f.name for f in fields(cls)}
    if unknown:
        raise InputError(f"unknown keys: {', '.join(sorted(unknown))}", record=record)
    return cls(**values)


def check_detections(detections: dict[str, Tensor], keys: tuple[str, ...], frame: int) -> int:
    """The number of detections, after checking that each of ``keys`` is present with one row
    per detection (a malformed frame fails here, not deep inside the matching)."""
    missing = [k for k in keys if k not in detections]
    if missing:
        raise InputError(f"detections lack {', '.join(missing)}", record=f"frame {frame}")
    n = len(detections["boxes"])
    wrong = [k for k in keys if len(detections[k]) != n]
    if wrong:
        raise InputError(f"{', '.join(wrong)} do not have one row per box ({n})", record=f"frame {frame}")
    return n


class Tracker(ABC):
    """Links per-frame detections into tracks; deterministic given the detections."""

    @abstractmethod
    def reset(self) -> None:
        """Forget every track: the next ``update`` is the first frame of a new video."""

    @abstractmethod
    def update(self, detections: dict[str, Tensor]) -> Tensor:
        """Track ids (int64, one per detection, -1 = not output) for the next frame."""
