"""Generation speed of OccludedShapes (images/s) with 1 and 2 workers, measured in one run.

Usage: python benchmarks/bench_generate.py [--scale cpu] [--images 400] [--out result.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

from instseg.config import load_params, scale_params
from instseg.data.occluded_shapes import BenchmarkConfig, build_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", default="cpu")
    parser.add_argument("--images", type=int, default=400, help="images per run (all in the train split)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    base = BenchmarkConfig.from_dict(scale_params(load_params(args.params), args.scale)["benchmark"])
    cfg = dataclasses.replace(base, split_sizes={"train": args.images, "val": 0, "test": 0})
    results = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            summary = build_benchmark(cfg, Path(tmp) / "b", workers=workers)
        results[f"workers_{workers}"] = summary["images_per_second"]
        print(f"{args.scale}: {workers} worker(s): {summary['images_per_second']:.1f} images/s "
              f"({args.images} images, {summary['seconds']:.2f} s)")
    results["speedup_2_vs_1"] = results["workers_2"] / results["workers_1"]
    print(f"2 workers vs 1: {results['speedup_2_vs_1']:.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
