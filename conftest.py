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
    _train_smoke_detectors(tmp / "benchmark", tmp / "runs")
    os.environ.update({"INSTSEG_SCALE": "smoke", "INSTSEG_DATA": str(tmp / "benchmark"),
                       "INSTSEG_RUNS": str(tmp / "runs"),
                       "INSTSEG_REPORTS": str(tmp / "reports"), "INSTSEG_HEADLESS": "1",
                       "MPLBACKEND": "Agg"})


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SMOKE_ROOT is not None:  # only what this session made
        shutil.rmtree(_SMOKE_ROOT, ignore_errors=True)


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
