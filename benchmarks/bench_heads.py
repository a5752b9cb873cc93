"""Mask heads on the same detector in one run: training iterations/s, inference latency per image,
parameters, and peak memory (CUDA: max allocated; CPU: the profiler's peak of one training step).

Heads are interleaved (A B A B ...) over repeats and medians reported, with ratios against the
first head, so the machine's noise affects both sides alike. Untrained detectors are used, so
the number of ROIs is set by ``max_rois_per_image`` in training and by the detector's
``detections_per_img`` cap at inference; the JSON records both.

Usage: python benchmarks/bench_heads.py [--scale cpu] [--detector frcnn] [--heads maskrcnn,bcnet]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from instseg.config import load_params, scale_params
from instseg.data.dataset import CocoInstanceDataset, collate_fn
from instseg.engine.runs import run_spec
from instseg.models.mask_heads import count_parameters


def _head(model: torch.nn.Module) -> torch.nn.Module:
    return model.roi_heads.mask_branch.head if hasattr(model, "roi_heads") else model.mask_branch.head


def _train_steps(model, optimizer, batches, device) -> float:
    model.train()
    start = time.perf_counter()
    for images, targets in batches:
        images = [i.to(device) for i in images]
        targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(batches) / (time.perf_counter() - start)


@torch.no_grad()
def _latency(model, images, device) -> tuple[float, float]:
    model.eval()
    detections = 0
    start = time.perf_counter()
    for image in images:
        detections += len(model([image.to(device)])[0]["boxes"])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / len(images), detections / len(images)


def _peak_memory(model, optimizer, batch, device) -> float:
    """MB: CUDA max allocated, or the CPU profiler's largest positive allocation total of one step."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        _train_steps(model, optimizer, [batch], device)
        return torch.cuda.max_memory_allocated() / 2**20
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _train_steps(model, optimizer, [batch], device)
    return max((e.cpu_memory_usage for e in prof.key_averages()), default=0) / 2**20


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", default="cpu")
    parser.add_argument("--detector", default="frcnn", choices=("frcnn", "fcos"))
    parser.add_argument("--heads", default="maskrcnn,bcnet")
    parser.add_argument("--data", default="data/occluded_shapes")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--infer-images", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    params = load_params(args.params)
    batch_size = int(scale_params(params, args.scale)["train"]["batch_size"])
    data = Path(args.data)
    train = CocoInstanceDataset(data / "annotations" / "train.json", data / "images")
    val = CocoInstanceDataset(data / "annotations" / "val.json", data / "images")
    batches = [collate_fn([train[(k * batch_size + j) % len(train)] for j in range(batch_size)])
               for k in range(args.iters + args.warmup)]
    images = [val[k][0] for k in range(min(args.infer_images, len(val)))]
    heads = args.heads.split(",")
    models, optimizers, results = {}, {}, {}
    for name in heads:
        torch.manual_seed(0)
        spec = run_spec(params, args.scale, name, args.detector, train.label_to_category_id)
        models[name] = spec.build_model().to(device)
        optimizers[name] = torch.optim.SGD([p for p in models[name].parameters() if p.requires_grad], lr=1e-3)
        _train_steps(models[name], optimizers[name], batches[: args.warmup], device)
        results[name] = {"train_it_s": [], "latency_s": [], "params": count_parameters(models[name]),
                         "head_params": count_parameters(_head(models[name])),
                         "max_rois_per_image": spec.build.get("max_rois_per_image")}
    for _ in range(args.repeats):
        for name in heads:
            results[name]["train_it_s"].append(_train_steps(models[name], optimizers[name], batches[args.warmup:], device))
            latency, per_image = _latency(models[name], images, device)
            results[name]["latency_s"].append(latency)
            results[name]["detections_per_image"] = per_image
    for name in heads:
        r = results[name]
        r["train_it_s"], r["latency_s"] = statistics.median(r["train_it_s"]), statistics.median(r["latency_s"])
        r["peak_memory_mb"] = _peak_memory(models[name], optimizers[name], batches[-1], device)
    base = results[heads[0]]
    summary = {"device": str(device), "scale": args.scale, "detector": args.detector, "batch_size": batch_size,
               "heads": results, "ratios": {}}
    print(f"{'head':<12}{'train it/s':>12}{'latency ms':>12}{'params M':>10}{'head M':>9}{'peak MB':>9}")
    for name in heads:
        r = results[name]
        print(f"{name:<12}{r['train_it_s']:>12.3f}{1000 * r['latency_s']:>12.1f}{r['params'] / 1e6:>10.2f}"
              f"{r['head_params'] / 1e6:>9.3f}{r['peak_memory_mb']:>9.0f}")
    for name in heads[1:]:
        r = results[name]
        ratios = {"train_throughput": r["train_it_s"] / base["train_it_s"], "latency": r["latency_s"] / base["latency_s"]}
        summary["ratios"][name] = ratios
        print(f"{name} vs {heads[0]}: training throughput {ratios['train_throughput']:.2f}x "
              f"({'meets' if ratios['train_throughput'] >= 0.8 else 'misses'} >= 0.8x), "
              f"latency {ratios['latency']:.2f}x ({'meets' if ratios['latency'] <= 1.15 else 'misses'} <= 1.15x)")
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
