"""The head benchmark script runs and reports positive, finite ratios and a FLOP profile (smoke scale)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_heads_smoke(smoke_dir: Path, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_heads", REPO / "benchmarks" / "bench_heads.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    summary = bench.main(["--scale", "smoke", "--data", str(smoke_dir), "--params", str(REPO / "params.yaml"),
                          "--iters", "1", "--warmup", "1", "--repeats", "1", "--infer-images", "2",
                          "--out", str(tmp_path / "b.json")])
    ratios = summary["ratios"]["bcnet"]
    assert all(math.isfinite(v) and v > 0 for v in ratios.values())
    assert summary["heads"]["bcnet"]["head_params"] > summary["heads"]["maskrcnn"]["head_params"]
    assert (tmp_path / "b.json").is_file()
    assert "step_flops" in ratios
    heads = summary["heads"]
    for name in ("maskrcnn", "bcnet"):
        r = heads[name]
        for key in ("step_gflops", "head_gflops", "head_share_of_step", "head_breakdown_gflops"):
            assert key in r, (name, key)
        assert r["step_gflops"] > 0 and r["head_gflops"] > 0 and r["head_rois"] > 0
        assert 0 < r["head_share_of_step"] <= 1
        assert r["head_breakdown_gflops"] and all(v >= 0 for v in r["head_breakdown_gflops"].values())
        assert sum(r["head_breakdown_gflops"].values()) > 0
    assert heads["bcnet"]["head_gflops"] > heads["maskrcnn"]["head_gflops"]
    assert {"occluder", "occludee", "predictors"} <= set(heads["bcnet"]["head_breakdown_gflops"])
    assert "maskrcnn" in summary["explanation"] and "bcnet" in summary["explanation"]
