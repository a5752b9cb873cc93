"""A PCAN run on disk, what ``instseg track --checkpoint`` reads: ``pcan.json`` (the model's
config and input channels, the detector run whose maps and detections it reads, the QDTrack
linker's settings) beside the engine's ``checkpoints/model_final.pt``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from instseg.engine.checkpoint import atomic_write
from instseg.engine.runs import RunSpec, load_run
from instseg.errors import InputError
from instseg.video.models.trackers.quasi_dense import QuasiDenseConfig
from instseg.video.pcan.model import PCAN, PCANConfig

PCAN_FILE = "pcan.json"


def save_pcan_run(run_dir: str | Path, model: PCAN, detector_run: str | Path, tracker: dict[str, Any]) -> None:
    """``pcan.json`` for a run whose weights the engine wrote (``detector_run`` kept relative)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    detector = Path(detector_run)
    if not detector.is_absolute():
        detector = Path(os.path.relpath(detector.resolve(), run_dir.resolve()))
    data = {"model": model.config.to_dict(), "channels": model.channels, "detector_run": detector.as_posix(),
            "tracker": dict(tracker)}
    atomic_write(run_dir / PCAN_FILE, lambda f: f.write(json.dumps(data, indent=2, sort_keys=True).encode()))


def is_pcan_run(path: str | Path) -> bool:
    return (Path(path) / PCAN_FILE).is_file()


@dataclass
class LoadedPCAN:
    detector: nn.Module
    detector_spec: RunSpec
    model: PCAN
    tracker: QuasiDenseConfig


def load_pcan_run(path: str | Path) -> LoadedPCAN:
    """The frozen detector, the trained PCAN and its linker settings of a run directory."""
    path = Path(path)
    try:
        data = json.loads((path / PCAN_FILE).read_text())
        config, channels = PCANConfig.from_dict(data["model"]), int(data["channels"])
        tracker = QuasiDenseConfig.from_dict(dict(data.get("tracker") or {}))
        detector_dir = Path(data["detector_run"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"cannot read the PCAN run ({exc.__class__.__name__}: {exc})", path / PCAN_FILE) from None
    model = PCAN(config, channels)
    weights = path / "checkpoints" / "model_final.pt"
    try:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except FileNotFoundError:
        raise InputError("the PCAN run has no trained weights (checkpoints/model_final.pt)", path) from None
    except (RuntimeError, ValueError, OSError) as exc:
        raise InputError(f"cannot load the PCAN weights: {str(exc).splitlines()[0]}", weights) from None
    detector, spec = load_run(detector_dir if detector_dir.is_absolute() else path / detector_dir)
    return LoadedPCAN(detector, spec, model.eval(), tracker)
