"""Shared fixtures. A smoke benchmark is generated once per session and exported through the
environment, so the notebooks validated by nbval run against it at the smoke scale."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("INSTSEG_DATA"):
        return
    from instseg.config import load_params, scale_params
    from instseg.data.occluded_shapes import BenchmarkConfig, build_benchmark

    tmp = Path(tempfile.mkdtemp(prefix="instseg-smoke-"))
    cfg = BenchmarkConfig.from_dict(scale_params(load_params(REPO / "params.yaml"), "smoke")["benchmark"])
    build_benchmark(cfg, tmp / "benchmark")
    os.environ.update({"INSTSEG_SCALE": "smoke", "INSTSEG_DATA": str(tmp / "benchmark"),
                       "INSTSEG_REPORTS": str(tmp / "reports"), "INSTSEG_HEADLESS": "1",
                       "MPLBACKEND": "Agg"})


@pytest.fixture(scope="session")
def smoke_dir() -> Path:
    """The session's smoke benchmark (images/, annotations/, meta.json)."""
    return Path(os.environ["INSTSEG_DATA"])
