"""Shared fixtures, at the repository root so that `pytest notebooks/...` alone gets them too. A
smoke benchmark and smoke detectors are built once per session and exported through the
environment, so the notebooks validated by nbval run against them at the smoke scale."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent
_SMOKE_ROOT: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("INSTSEG_DATA"):
        return
    from instseg.config import load_params, scale_params
    from instseg.data.occluded_shapes import BenchmarkConfig, build_benchmark

    global _SMOKE_ROOT
    tmp = _SMOKE_ROOT = Path(tempfile.mkdtemp(prefix="instseg-smoke-"))
    cfg = BenchmarkConfig.from_dict(scale_params(load_params(REPO / "params.yaml"), "smoke")["benchmark"])
    build_benchmark(cfg, tmp / "benchmark")
    _build_smoke_videos(tmp / "video_benchmark")
    _train_smoke_detectors(tmp / "benchmark", tmp / "runs")
    os.environ.update({"INSTSEG_SCALE": "smoke", "INSTSEG_DATA": str(tmp / "benchmark"),
                       "INSTSEG_VIDEO_DATA": str(tmp / "video_benchmark"),
                       "INSTSEG_RUNS": str(tmp / "runs"),
                       "INSTSEG_REPORTS": str(tmp / "reports"), "INSTSEG_HEADLESS": "1",
                       "MPLBACKEND": "Agg"})


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SMOKE_ROOT is not None:  # only what this session made
        shutil.rmtree(_SMOKE_ROOT, ignore_errors=True)


def _build_smoke_videos(out: Path) -> None:
    """The smoke OccludedShapes-VIS benchmark (video.scales.smoke), as `instseg data sync` builds it."""
    from instseg.video.cli import build_video_data

    build_video_data(str(REPO / "params.yaml"), "smoke", out, workers=1)


def _train_smoke_detectors(benchmark: Path, runs: Path) -> None:
    """The shared detectors the notebooks load, as `dvc repro` trains them, at the smoke scale."""
    import contextlib
    import io

    from instseg.cli import main

    ann = benchmark / "annotations"
    for name, detector, extra in (("frcnn", "frcnn", []), ("fcos", "fcos", []),
                                  ("frcnn_boxes", "frcnn", ["--mask-categories", "none"])):
        with contextlib.redirect_stdout(io.StringIO()):
            code = main(["train", "--model", "maskrcnn", "--detector", detector, "--scale", "smoke",
                         "--params", str(REPO / "params.yaml"), "--train-json", str(ann / "train.json"),
                         "--train-images", str(benchmark / "images"), "--val-json", str(ann / "val.json"),
                         "--val-images", str(benchmark / "images"), "--out", str(runs / name), *extra])
        if code:
            raise RuntimeError(f"smoke training of {name} failed ({code})")


@pytest.fixture(scope="session")
def smoke_dir() -> Path:
    """The session's smoke benchmark (images/, annotations/, meta.json)."""
    return Path(os.environ["INSTSEG_DATA"])


@pytest.fixture(scope="session")
def smoke_video_dir() -> Path:
    """The session's smoke video benchmark (frames/, annotations/, mots/, meta.json)."""
    return Path(os.environ["INSTSEG_VIDEO_DATA"])


@pytest.fixture(scope="session")
def smoke_runs_dir() -> Path:
    """The session's smoke detector runs (frcnn, fcos, frcnn_boxes)."""
    return Path(os.environ["INSTSEG_RUNS"])


@pytest.fixture(scope="session")
def smoke_frozen(smoke_dir: Path) -> dict:
    """The smoke datasets and ground truth with a tiny untrained Faster R-CNN (16 channels): what
    the frozen-detector head protocols need to run, not to score well."""
    import torch

    from instseg.data.coco_json import load_coco_gt
    from instseg.data.dataset import CocoInstanceDataset
    from instseg.models.detectors import build_detector

    ann = smoke_dir / "annotations"
    torch.manual_seed(0)
    detector = build_detector("frcnn", 10, "fcn", {"conv_channels": 16}, fpn_channels=16, min_size=64, max_size=64)
    return {"train": CocoInstanceDataset(ann / "train.json", smoke_dir / "images"),
            "val": CocoInstanceDataset(ann / "val.json", smoke_dir / "images"),
            "train_gt": load_coco_gt(ann / "train.json"), "val_gt": load_coco_gt(ann / "val.json"),
            "detector": detector}
