"""Speed of COCO segm evaluation: faster-coco-eval (our default) against pycocotools, in one run.

A synthetic case (default 500 images of 128-256 px, 10 instances each, one jittered detection per
instance plus false positives, compressed RLE) is evaluated by both backends on the same data,
each ``--repeat`` times, interleaved. Two timings are reported, as medians:
``evaluate`` is the public call (validation and copies included, the same work for both
backends), ``evaluator`` is the backend alone (loadRes, evaluate, accumulate, summarize).
The stats of the two backends must agree to 1e-9.

Usage: python benchmarks/bench_eval.py [--images 500] [--instances 10] [--repeat 3] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from instseg.data.coco_json import mask_to_rle
from instseg.evaluation import STAT_KEYS, evaluate
from instseg.evaluation.backends import BACKENDS, run_coco_eval
from instseg.evaluation.inputs import prepare


def _ellipse(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    ry, rx = rng.uniform(h / 16, h / 4), rng.uniform(w / 16, w / 4)
    yy, xx = np.ogrid[:h, :w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def synthetic_case(n_images: int, n_instances: int, n_categories: int = 5, seed: int = 0) -> tuple[dict, list[dict]]:
    """Ground truth and results with ``n_images * n_instances`` ground-truth masks."""
    rng = np.random.default_rng(seed)
    images, annotations, results = [], [], []
    for image_id in range(1, n_images + 1):
        h, w = (int(v) for v in rng.integers(128, 257, size=2))
        images.append({"id": image_id, "height": h, "width": w})
        for _ in range(n_instances):
            mask = _ellipse(rng, h, w)
            category_id = int(rng.integers(1, n_categories + 1))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category_id,
                                "segmentation": mask_to_rle(mask), "area": int(mask.sum()), "iscrowd": 0})
            if rng.random() < 0.9:
                shifted = np.roll(mask, tuple(int(v) for v in rng.integers(-4, 5, size=2)), axis=(0, 1))
                results.append({"image_id": image_id, "category_id": category_id, "score": float(rng.random()),
                                "segmentation": mask_to_rle(shifted)})
        for _ in range(n_instances // 5):
            results.append({"image_id": image_id, "category_id": int(rng.integers(1, n_categories + 1)),
                            "score": float(rng.random()), "segmentation": mask_to_rle(_ellipse(rng, h, w))})
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, n_categories + 1)]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def _median_seconds(calls: dict[str, Callable[[], object]], repeat: int) -> tuple[dict[str, float], dict]:
    """Median wall time of each call, the calls interleaved so drift hits all alike; last outputs too."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    outputs = {}
    for _ in range(repeat):
        for name, call in calls.items():
            start = time.perf_counter()
            outputs[name] = call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}, outputs


def _check_equal(metrics: dict[str, dict]) -> None:
    faster, reference = metrics["faster"], metrics["pycocotools"]
    for key in STAT_KEYS:
        a, b = faster[key], reference[key]
        if (a is None) != (b is None) or (a is not None and abs(a - b) > 1e-9):
            raise AssertionError(f"{key}: faster {a} != pycocotools {b}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--instances", type=int, default=10, help="ground-truth instances per image")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=None, help="write a JSON summary here")
    args = parser.parse_args()

    gt, results = synthetic_case(args.images, args.instances)
    prepared = prepare(gt, results, "segm")
    seconds, metrics = _median_seconds({b: lambda b=b: evaluate(gt, results, backend=b) for b in BACKENDS},
                                       args.repeat)
    core, _ = _median_seconds({b: lambda b=b: run_coco_eval(prepared.gt, prepared.results, "segm", b)
                               for b in BACKENDS}, args.repeat)
    _check_equal(metrics)
    summary = {"images": args.images, "gt_instances": len(gt["annotations"]), "detections": len(results),
               "repeat": args.repeat, "AP": metrics["faster"]["AP"],
               "evaluate_seconds": seconds, "evaluate_speedup": seconds["pycocotools"] / seconds["faster"],
               "evaluator_seconds": core, "evaluator_speedup": core["pycocotools"] / core["faster"]}
    print(f"segm, {summary['gt_instances']} instances, {summary['detections']} detections, "
          f"AP {summary['AP']:.3f} (both backends), median of {args.repeat}:")
    for label, times, ratio in (("evaluate()", seconds, summary["evaluate_speedup"]),
                                ("evaluator only", core, summary["evaluator_speedup"])):
        print(f"  {label:15s} faster {times['faster']:.3f} s, pycocotools {times['pycocotools']:.3f} s: "
              f"faster is {ratio:.1f}x")
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
