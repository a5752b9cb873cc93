"""How many iterations do the frozen-detector heads need to pass the plateau check?

Trains a few heads (one seed each) on a trained detector's cached ROIs at several budgets, with
the notebooks' schedule (warmup, one 10x decay at 60%) and validation loss, and prints, per head
and budget, the plateau check, the final validation loss and the training time per iteration: what
the `ablation.iters` / `partial.iters` budgets in params.yaml are chosen from. A script, not a test.

    python benchmarks/head_convergence.py --run runs/frcnn --budgets 200 600 1200 --heads fcn bcnet cpmask \
        [--lrs 0.001 0.003] [--batch-rois 32]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import instseg  # noqa: F401 - flushes subnormal floats before torch starts its threads
from instseg.config import load_params, scale_params
from instseg.data.dataset import CocoInstanceDataset
from instseg.engine.runs import load_run
from instseg.experiments import frozen_heads as fh

HEADS = {"fcn": fh.TABLE_3_3[0],
         "bilayer_no_occluder_targets": fh.TABLE_3_1[0], "bcnet": fh.TABLE_3_3[3],
         "cpmask": fh.HeadVariant("cpmask", "cpmask", occluder_rule="none")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/frcnn", help="a trained detector's run directory")
    parser.add_argument("--data", default="data/occluded_shapes")
    parser.add_argument("--scale", default="cpu")
    parser.add_argument("--budgets", type=int, nargs="+", default=[200, 600, 1200])
    parser.add_argument("--heads", nargs="+", default=["fcn", "bcnet"], choices=sorted(HEADS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lrs", type=float, nargs="+", default=None, help="learning rates (default: the preset's)")
    parser.add_argument("--batch-rois", type=int, default=None, help="ROIs per step (default: the preset's)")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()

    preset = scale_params(load_params("params.yaml"), args.scale)
    abl = preset["ablation"]
    data = Path(args.data)
    train = CocoInstanceDataset(data / "annotations" / "train.json", data / "images")
    val = CocoInstanceDataset(data / "annotations" / "val.json", data / "images")
    detector = load_run(args.run)[0].eval()
    cfg = fh.AblationConfig(iters=max(args.budgets), batch_rois=args.batch_rois or abl["batch_rois"], lr=abl["lr"],
                            channels=preset["detector"]["head_channels"], jitter_per_gt=abl["jitter_per_gt"])
    caches: dict = {}
    rows = []
    for name in args.heads:
        variant = HEADS[name]
        key = (variant.occluder_rule, variant.amodal)
        if key not in caches:
            tic = time.perf_counter()
            caches[key] = (fh.cache_roi_features(detector, train, range(len(train)), cfg.jitter_per_gt, 0, *key),
                           fh.cache_roi_features(detector, val, range(min(cfg.val_images, len(val))),
                                                 cfg.jitter_per_gt, 0, *key))
            print(f"cache {key}: {len(caches[key][0])} ROIs in {time.perf_counter() - tic:.0f} s", flush=True)
        cache, val_cache = caches[key]
        for lr in args.lrs or [cfg.lr]:
            for iters in args.budgets:
                head = fh.train_head(variant, cache, iters, cfg.batch_rois, lr, args.seed, cfg.channels,
                                     cfg.optimizer, val_cache=val_cache, val_rois=cfg.val_rois,
                                     jitter_draw=cfg.jitter_draw)
                check = head.plateau
                row = {"head": name, "lr": lr, "batch_rois": cfg.batch_rois, "iters": iters, "passed": check.passed,
                       "late_improvement": check.improvement, "phase_improvement": check.phase_improvement,
                       "final_val_loss": head.val_curve[-1][1], "ms_per_iter": 1000 * head.train_seconds / iters,
                       "val_curve": head.val_curve}
                rows.append(row)
                phase = "n/a" if check.phase_improvement is None else f"{check.phase_improvement:+.2%}"
                print(f"{name:>28} lr {lr:g} {iters:>5} it: plateau {'pass' if check.passed else 'FAIL'} "
                      f"(last 20% {check.improvement:+.2%}, before the decay {phase}), "
                      f"val loss {row['final_val_loss']:.4f}, {row['ms_per_iter']:.0f} ms/it", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
