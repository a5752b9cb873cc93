"""Table 5.8's non-learned rows (cv2 inpainting alone, DFVI-like, FGVC-like; DIS and exact flows)
on a VOI split, one thread. A thin CLI over :mod:`instseg.video.voin.baseline_eval`, which says
what each number is.

Usage: python benchmarks/voin_baselines.py --index /tmp/voin-baselines/val/index.json \\
           --annotations data/occluded_shapes_vis/annotations/val.json [--stride 1] [--out rows.json]
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import torch

from instseg.video.data.occluded_shapes_vis.build import load_scenes
from instseg.video.voin.baseline_eval import METRICS, evaluate_sample, summarise
from instseg.video.voin.data import iter_samples


def table(summary: list[dict], title: str) -> str:
    lines = [f"### {title}", "", "| method | flows | n | " + " | ".join(METRICS) + " |",
             "|---|---|---|" + "---|" * len(METRICS)]
    for row in summary:
        lines.append(f"| {row['method']} | {row['flows']} | {row['samples']} | "
                     + " | ".join(f"{row[k]:.4f}" for k in METRICS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", required=True)
    parser.add_argument("--annotations", required=True, help="the split's OccludedShapes-VIS annotation JSON")
    parser.add_argument("--stride", type=int, default=1, help="score every stride-th sample of the index")
    parser.add_argument("--out", help="write every per-sample row here (JSON)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    scenes = load_scenes(args.annotations)
    start, rows, samples, dis_seconds = time.perf_counter(), [], 0, 0.0
    for i, (entry, sample) in enumerate(iter_samples(args.index)):
        if i % args.stride == 0:
            sample_rows = evaluate_sample(sample, scenes, record=entry["file"])
            rows += sample_rows
            samples += 1
            dis_seconds += sample_rows[0]["dis_seconds"]
    print(f"{samples} samples in {time.perf_counter() - start:.1f} s; their DIS flows {dis_seconds:.2f} s\n")
    print(table(summarise(rows), "all samples"))
    for kind in ("synthetic", "natural"):
        print("\n" + table(summarise(r for r in rows if r["kind"] == kind), f"{kind} samples"))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
