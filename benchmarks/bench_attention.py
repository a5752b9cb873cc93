"""Cost of PCAN's prototypical attention against non-local and transformer attention, explicit and
fused (SDPA), for one query frame reading a memory of T frames (Table 5.5's question, and one it
could not ask). A thin CLI over :mod:`instseg.video.efficiency`, where the variants and the
measurements (and what each one counts) are described.

FLOPs and peak memory at the paper's sizes (BDD frames at P2, 180 x 320 positions; C = 256, K = 30
prototypes, 3 EM iterations) are measured on meta tensors; wall time at ``--hw`` positions (default
32 x 32 = P2 of a 128² frame) on this machine, medians of ``--repeat`` runs, as ratios to the
explicit non-local attention measured in the same run.

Usage: python benchmarks/bench_attention.py [--lengths 2 4 8] [--hw 1024] [--channels 256] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json

import torch

from instseg.video.efficiency import PAPER_HW, measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--hw", type=int, default=1024, help="positions per frame for the timing")
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--prototypes", type=int, default=30)
    parser.add_argument("--em-iters", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default=None, help="write the results as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = (args.lengths, PAPER_HW, args.channels, args.prototypes, args.em_iters)
    paper = measure(*sizes)
    timed = measure(args.lengths, args.hw, args.channels, args.prototypes, args.em_iters, device="cpu",
                    repeat=args.repeat, time_it=True)
    rows = paper.drop(columns=["time_ms", "time_vs_nonlocal"]).assign(
        **{f"time_ms_at_{args.hw}": timed.time_ms, "time_vs_nonlocal": timed.time_vs_nonlocal})
    for row in rows.to_dict("records"):
        print(f"T={row['T']}  {row['method']:<24} {row['GFLOPs']:>10.1f} GFLOPs "
              f"({row['flops_vs_nonlocal']:.3f}x non-local) {row['peak_MB'] / 1e3:>7.2f} GB "
              f"({row['memory_vs_nonlocal']:.3f}x)  {row[f'time_ms_at_{args.hw}']:>8.2f} ms "
              f"({row['time_vs_nonlocal']:.2f}x)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"settings": vars(args), "rows": rows.to_dict("records")}, f, indent=2)


if __name__ == "__main__":
    main()
