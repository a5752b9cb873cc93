"""A tracker run on disk: what ``instseg track --checkpoint`` reads.

A tracker run directory holds ``tracker.json`` (the tracker's name and settings, the detector run
it links detections of, and the embedding head's sizes where it has one) and, for an embedding
tracker, the engine's ``checkpoints/model_final.pt`` of the head. A detector run directory (an
``instseg train`` run, no ``tracker.json``) is accepted too and tracks with the mask-IoU tracker:
any image detector tracks a video out of the box.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from instseg.engine.checkpoint import atomic_write
from instseg.engine.runs import RUN_FILE, RunSpec, load_run
from instseg.errors import InputError
from instseg.video.models.trackers import MaskIoUConfig, MaskIoUTracker, QuasiDenseConfig, QuasiDenseTracker, Tracker
from instseg.video.models.trackers.embedding import QuasiDenseEmbedHead

TRACKER_FILE = "tracker.json"
TRACKERS: dict[str, tuple[type[Tracker], type]] = {
    "mask_iou": (MaskIoUTracker, MaskIoUConfig),
    "quasi_dense": (QuasiDenseTracker, QuasiDenseConfig),
}


def build_tracker(name: str, config: dict[str, Any] | None = None) -> Tracker:
    """The tracker ``name`` (``mask_iou`` or ``quasi_dense``) with ``config`` over its defaults."""
    if name not in TRACKERS:
        raise InputError(f"unknown tracker {name!r}; known: {', '.join(TRACKERS)}", record="tracker")
    tracker_cls, config_cls = TRACKERS[name]
    return tracker_cls(config_cls.from_dict(dict(config or {})))


@dataclass
class TrackerSpec:
    """The recipe of a tracker run. ``detector_run`` is relative to the tracker run directory
    when both lie on one tree, so a runs/ folder can move as a whole."""

    tracker: str
    detector_run: str
    config: dict[str, Any] = field(default_factory=dict)
    embed_head: dict[str, int] | None = None  # QuasiDenseEmbedHead keyword arguments

    @property
    def needs_embeddings(self) -> bool:
        return self.embed_head is not None


@dataclass
class LoadedTracker:
    """Everything ``instseg track`` runs: the frozen detector, its label mapping, the tracker and
    the embedding head (None for the mask-IoU tracker)."""

    detector: nn.Module
    detector_spec: RunSpec
    tracker: Tracker
    embed_head: QuasiDenseEmbedHead | None
    spec: TrackerSpec


def save_tracker_run(run_dir: str | Path, spec: TrackerSpec) -> None:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    detector = Path(spec.detector_run)
    if not detector.is_absolute():
        detector = Path(os.path.relpath(detector.resolve(), run_dir.resolve()))
    data = asdict(spec) | {"detector_run": detector.as_posix()}
    atomic_write(run_dir / TRACKER_FILE, lambda f: f.write(json.dumps(data, indent=2, sort_keys=True).encode()))


def read_tracker_spec(run_dir: str | Path) -> TrackerSpec:
    path = Path(run_dir) / TRACKER_FILE
    try:
        data = json.loads(path.read_text())
        spec = TrackerSpec(data["tracker"], data["detector_run"], data.get("config") or {}, data.get("embed_head"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"cannot read the tracker run ({exc.__class__.__name__}: {exc})", path) from None
    build_tracker(spec.tracker, spec.config)  # fail on a bad name or setting now, not mid-video
    return spec


def load_tracker_run(path: str | Path) -> LoadedTracker:
    """A tracker run directory, or a detector run directory (tracked by the mask-IoU tracker)."""
    path = Path(path)
    if not path.is_dir():
        raise InputError("not a run directory (a tracker run with tracker.json, or a detector run with run.json)",
                         path)
    if not (path / TRACKER_FILE).is_file():
        if not (path / RUN_FILE).is_file():
            raise InputError(f"neither {TRACKER_FILE} nor {RUN_FILE} found", path)
        spec = TrackerSpec("mask_iou", str(path.resolve()))
        detector, detector_spec = load_run(path)
        return LoadedTracker(detector, detector_spec, build_tracker(spec.tracker), None, spec)
    spec = read_tracker_spec(path)
    detector_dir = Path(spec.detector_run)
    detector, detector_spec = load_run(detector_dir if detector_dir.is_absolute() else path / detector_dir)
    head = None
    if spec.embed_head is not None:
        weights = path / "checkpoints" / "model_final.pt"
        head = QuasiDenseEmbedHead(**spec.embed_head)
        try:
            head.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except FileNotFoundError:
            raise InputError("the embedding tracker has no trained head (checkpoints/model_final.pt)", path) from None
        except (RuntimeError, ValueError, OSError) as exc:
            raise InputError(f"cannot load the embedding head: {str(exc).splitlines()[0]}", weights) from None
        head.eval()
    return LoadedTracker(detector, detector_spec, build_tracker(spec.tracker, spec.config), head, spec)
