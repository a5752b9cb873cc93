"""Mask heads on the same detector in one run: training iterations/s, inference latency per image,
parameters, and peak memory (CUDA: max allocated; CPU: the profiler's peak of one training step).

Heads are interleaved (A B A B ...) over repeats and medians reported, with ratios against the
first head, so the machine's noise affects both sides alike. Untrained detectors are used, so
the number of ROIs is set by ``max_rois_per_image`` in training and by the detector's
``detections_per_img`` cap at inference; the JSON records both.

A FLOP profile (``torch.utils.flop_counter.FlopCounterMode``) explains the ratios: per head, one
training step forward+backward on the first timed batch (``step_gflops``), the head alone
forward+backward on random [R, C, 14, 14] features with R the ROIs its mask branch saw in that
step (``head_gflops``, ``head_rois``), ``head_share_of_step``, the head's forward FLOPs by
top-level child and non-local block (``head_breakdown_gflops``), and inference FLOPs per image
on the latency images. ``ratios[head]["step_flops"]`` and the top-level ``explanation`` compare
the FLOP-proportional throughput ratio with the measured one. FLOPs count convolutions and
matmuls (FlopCounterMode's formulas); elementwise ops, softmax, norms and RoIAlign count zero.

Heads with extra maps (BCNet's occluder mask and contours) compute them at inference only when
asked; ``maps`` records, per such head, its predict time without and with them, interleaved in
one process: the head alone on ``--maps-rois`` ROIs (what the frozen-detector ablation's
evaluation runs per chunk) and the detector end to end (its mask branch asked or not, which also
skips pasting the maps), with ``*_ratio`` = without / with.

Usage: python benchmarks/bench_heads.py [--scale cpu] [--detector frcnn] [--heads maskrcnn,bcnet]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from instseg.config import load_params, scale_params
from instseg.data.dataset import CocoInstanceDataset, collate_fn
from instseg.engine.runs import run_spec
from instseg.models.mask_heads import count_parameters, run_head


def _head(model: torch.nn.Module) -> torch.nn.Module:
    return model.roi_heads.mask_branch.head if hasattr(model, "roi_heads") else model.mask_branch.head


def _to_device(images, targets, device):
    images = [i.to(device) for i in images]
    targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
    return images, targets


def _module_key(model: torch.nn.Module, module: torch.nn.Module) -> str | None:
    """FlopCounterMode's name for ``module`` inside ``model`` (root class name + dotted path)."""
    path = next((n for n, m in model.named_modules() if m is module), None)
    return None if path is None else ".".join(filter(None, (type(model).__name__, path)))


def _gflops(counts: dict) -> float:
    return sum(counts.values()) / 1e9


def _tree_gflops(counts: dict, key: str, module: torch.nn.Module) -> float:
    """GFLOPs attributed to ``module`` (FlopCounterMode name ``key``); a container whose own
    forward never runs (a ModuleDict the parent indexes) gets the sum of its children."""
    if key in counts:
        return _gflops(counts[key])
    return sum(_tree_gflops(counts, f"{key}.{name}", child) for name, child in module.named_children())


def _step_flops(model, batch, device, fallback_rois: int) -> dict:
    """FLOPs of one training forward+backward (no optimizer step) and the shape of the ROI features
    the mask head received in it. (The head's FLOPs are counted alone, see ``_head_flops``:
    FlopCounterMode's module attribution misses part of a bilayer head's backward, whose input
    gradient arrives by two paths, and books it only under "Global".)"""
    head, seen = _head(model), []
    hook = head.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    model.train()
    images, targets = _to_device(*batch, device)
    torch.manual_seed(0)
    try:
        with FlopCounterMode(display=False) as counter:
            sum(model(images, targets).values()).backward()
    finally:
        hook.remove()
        model.zero_grad(set_to_none=True)
    rois = sum(shape[0] for shape in seen)
    if seen and rois > 0:
        source = "ROIs the mask branch received in the profiled training step"
        feature_shape = seen[0][1:]
    else:  # the hook did not fire or saw no ROI: assume the cap was reached in every image
        rois, source = fallback_rois, "fallback: max_rois_per_image x batch_size (no ROI seen in the step)"
        conv = next(m for m in head.modules() if isinstance(m, torch.nn.Conv2d))
        feature_shape = (conv.in_channels, 14, 14)
    return {"step_gflops": counter.get_total_flops() / 1e9,
            "head_rois": rois, "head_rois_source": source, "head_feature_shape": list(feature_shape)}


def _head_flops(head: torch.nn.Module, rois: int, feature_shape, device) -> dict:
    """The head alone on random [R, C, 14, 14] features: forward+backward GFLOPs (input gradient
    included, as in the step, where the features come from the backbone), forward GFLOPs, and
    the forward by top-level child plus any non-local block inside one (keys "child.path (Class)")."""
    head = copy.deepcopy(head).train()  # a copy: its BN statistics and grads stay out of the model
    torch.manual_seed(0)
    x = torch.randn(rois, *feature_shape, device=device, requires_grad=True)
    num_classes = getattr(head, "num_classes", None)  # class-specific heads select a channel per ROI
    labels = None if num_classes is None else torch.randint(1, max(num_classes, 2), (rois,), device=device)
    with FlopCounterMode(display=False) as forward:
        outputs = head(x, labels)
    with FlopCounterMode(display=False) as backward:
        sum(o.float().sum() for o in outputs.values()).backward()
    counts = forward.get_flop_counts()
    root = type(head).__name__
    breakdown = {}
    for name, child in head.named_children():
        breakdown[name] = _tree_gflops(counts, f"{root}.{name}", child)
        for sub, module in child.named_modules():
            if sub and "NonLocal" in type(module).__name__:
                label = f"{name}.{sub} ({type(module).__name__})"
                breakdown[label] = _tree_gflops(counts, f"{root}.{name}.{sub}", module)
    forward_total = forward.get_total_flops() / 1e9
    other = forward_total - sum(v for k, v in breakdown.items() if "." not in k)
    if abs(other) > 1e-9:
        breakdown["(outside children)"] = other
    return {"head_gflops": forward_total + backward.get_total_flops() / 1e9,
            "head_forward_gflops": forward_total, "head_breakdown_gflops": breakdown}


@torch.no_grad()
def _infer_flops(model, images, device) -> dict:
    """Mean inference GFLOPs per image over ``images`` and the head's share of them."""
    model.eval()
    with FlopCounterMode(display=False) as counter:
        for image in images:
            model([image.to(device)])
    counts, key = counter.get_flop_counts(), _module_key(model, _head(model))
    total = counter.get_total_flops() / 1e9
    head = _gflops(counts[key]) if key in counts else 0.0
    return {"infer_gflops_per_image": total / len(images), "infer_head_share": head / total if total else 0.0}


def _train_steps(model, optimizer, batches, device) -> float:
    model.train()
    start = time.perf_counter()
    for images, targets in batches:
        images, targets = _to_device(images, targets, device)
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


def _branch(model: torch.nn.Module) -> torch.nn.Module:
    return model.roi_heads.mask_branch if hasattr(model, "roi_heads") else model.mask_branch


@torch.no_grad()
def _maps_cost(model, images, device, feature_shape, rois: int, repeats: int, head_calls: int = 5) -> dict:
    """Median predict seconds of a head with ``optional_maps`` without / with its maps, A B A B
    interleaved: the head alone (``head_calls`` forwards on ``rois`` random ROIs) and the detector
    end to end on ``images``. Empty for heads without extra maps."""
    head, branch = _head(model), _branch(model)
    if not getattr(head, "optional_maps", ()):
        return {}
    model.eval()
    torch.manual_seed(0)
    x = torch.randn(rois, *feature_shape, device=device)
    times: dict[str, dict[bool, list[float]]] = {"head": {False: [], True: []}, "latency": {False: [], True: []}}
    saved = branch.return_maps
    try:
        for _ in range(repeats):
            for maps in (False, True):
                start = time.perf_counter()
                for _ in range(head_calls):
                    run_head(head, x, return_maps=maps)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times["head"][maps].append((time.perf_counter() - start) / head_calls)
                branch.return_maps = maps
                times["latency"][maps].append(_latency(model, images, device)[0])
    finally:
        branch.return_maps = saved
    out: dict = {"maps_rois": rois, "maps_repeats": repeats}
    for kind in ("head", "latency"):
        without, with_maps = (statistics.median(times[kind][m]) for m in (False, True))
        out[f"{kind}_s_without_maps"], out[f"{kind}_s_with_maps"] = without, with_maps
        out[f"{kind}_ratio"] = without / with_maps
    return out


def _peak_memory(model, optimizer, batch, device) -> float:
    """MB: CUDA max allocated, or the CPU profiler's largest positive allocation total of one step."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        _train_steps(model, optimizer, [batch], device)
        return torch.cuda.max_memory_allocated() / 2**20
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _train_steps(model, optimizer, [batch], device)
    return max((e.cpu_memory_usage for e in prof.key_averages()), default=0) / 2**20


def _explanation(heads: list[str], results: dict, ratios: dict) -> str:
    """One sentence per compared head: FLOP-proportional throughput/latency ratios vs measured."""
    base_name, base = heads[0], results[heads[0]]
    parts = []
    for name in heads[1:]:
        r, q = results[name], ratios[name]
        x, y = q["step_flops"], r["head_gflops"] / base["head_gflops"]
        text = (f"{name}'s training step costs {x:.2f}x {base_name}'s FLOPs (its head is {y:.1f}x the "
                f"{base_name} head and {r['head_share_of_step']:.0%} of the step, vs {base['head_share_of_step']:.0%} "
                f"for {base_name}), so at equal FLOP throughput its it/s ratio would be 1/{x:.2f} = {1 / x:.2f}; "
                f"measured {q['train_throughput']:.2f}")
        if r["head_rois"] != base["head_rois"]:
            per_roi = (r["head_gflops"] / r["head_rois"]) / (base["head_gflops"] / base["head_rois"])
            text += (f" (the heads saw {r['head_rois']} vs {base['head_rois']} ROIs in the profiled step; "
                     f"per ROI the head costs {per_roi:.1f}x)")
        split = ", ".join(f"{k} {v / r['head_forward_gflops']:.0%}" for k, v in r["head_breakdown_gflops"].items())
        text += f". Its head's forward FLOPs split as {split}"
        text += (f". At inference it costs {q['infer_flops']:.2f}x the FLOPs per image "
                 f"(head {r['infer_head_share']:.0%} of them on {r['detections_per_image']:.1f} detections per image, "
                 f"vs {base['infer_head_share']:.0%} for "
                 f"{base_name} on {base['detections_per_image']:.1f}), so a FLOP-proportional latency ratio would be "
                 f"{q['infer_flops']:.2f}; measured {q['latency']:.2f}.")
        parts.append(text)
    return " ".join(parts)


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
    parser.add_argument("--maps-rois", type=int, default=128, help="ROIs per head forward in the maps timing")
    parser.add_argument("--maps-repeats", type=int, default=5)
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
    for name in heads:  # FLOP profile last: it leaves the models' weights as they were
        r, model = results[name], models[name]
        fallback = (r["max_rois_per_image"] or 1) * batch_size
        r.update(_step_flops(model, batches[args.warmup], device, fallback))
        r.update(_head_flops(_head(model), r["head_rois"], r["head_feature_shape"], device))
        r["head_share_of_step"] = r["head_gflops"] / r["step_gflops"]
        r.update(_infer_flops(model, images, device))
    maps = {name: cost for name in heads
            if (cost := _maps_cost(models[name], images, device, results[name]["head_feature_shape"], args.maps_rois,
                                   args.maps_repeats))}
    base = results[heads[0]]
    summary = {"device": str(device), "scale": args.scale, "detector": args.detector, "batch_size": batch_size,
               "heads": results, "ratios": {}, "maps": maps}
    print(f"{'head':<12}{'train it/s':>12}{'latency ms':>12}{'params M':>10}{'head M':>9}{'peak MB':>9}")
    for name in heads:
        r = results[name]
        print(f"{name:<12}{r['train_it_s']:>12.3f}{1000 * r['latency_s']:>12.1f}{r['params'] / 1e6:>10.2f}"
              f"{r['head_params'] / 1e6:>9.3f}{r['peak_memory_mb']:>9.0f}")
    for name in heads[1:]:
        r = results[name]
        ratios = {"train_throughput": r["train_it_s"] / base["train_it_s"], "latency": r["latency_s"] / base["latency_s"],
                  "step_flops": r["step_gflops"] / base["step_gflops"],
                  "infer_flops": r["infer_gflops_per_image"] / base["infer_gflops_per_image"]}
        summary["ratios"][name] = ratios
        print(f"{name} vs {heads[0]}: training throughput {ratios['train_throughput']:.2f}x "
              f"({'meets' if ratios['train_throughput'] >= 0.8 else 'misses'} >= 0.8x), "
              f"latency {ratios['latency']:.2f}x ({'meets' if ratios['latency'] <= 1.15 else 'misses'} <= 1.15x)")
    print("\nFLOP profile (fwd+bwd of one training step; head alone fwd+bwd on its R ROIs of that step)")
    print(f"{'head':<12}{'step GF':>10}{'head GF':>10}{'R':>6}{'share':>8}{'infer GF/img':>14}{'head share':>12}")
    for name in heads:
        r = results[name]
        print(f"{name:<12}{r['step_gflops']:>10.2f}{r['head_gflops']:>10.2f}{r['head_rois']:>6d}"
              f"{r['head_share_of_step']:>8.0%}{r['infer_gflops_per_image']:>14.3f}{r['infer_head_share']:>12.0%}")
        print(f"  head forward {r['head_forward_gflops']:.3f} GFLOPs: " + ", ".join(
            f"{k} {v:.3f}" for k, v in r["head_breakdown_gflops"].items()))
    summary["explanation"] = _explanation(heads, results, summary["ratios"])
    print(summary["explanation"])
    for name, cost in maps.items():
        print(f"{name} predict without / with its extra maps (same process, interleaved, medians of "
              f"{cost['maps_repeats']}): head alone on {cost['maps_rois']} ROIs "
              f"{1000 * cost['head_s_without_maps']:.2f} / {1000 * cost['head_s_with_maps']:.2f} ms = "
              f"{cost['head_ratio']:.2f}x; end to end "
              f"{1000 * cost['latency_s_without_maps']:.1f} / {1000 * cost['latency_s_with_maps']:.1f} ms per image "
              f"= {cost['latency_ratio']:.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
