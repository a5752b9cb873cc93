"""Cost of PCAN's prototypical attention against non-local attention, explicit and fused (SDPA),
for one query frame reading a memory of T frames (Table 5.5's question, and one it could not ask).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on meta tensors (nothing is
allocated, so the paper's sizes fit any machine): BDD frames at P2 (180 x 320 positions), C = 256,
K = 30 prototypes, 3 EM iterations, as the thesis states. The counter counts a multiply-add as 2
FLOPs; MACs = FLOPs / 2 is printed beside (the thesis counts one MAC as one FLOP). The EM of the
memory is counted with the readout (a memory frame's prototypes are computed once per frame it
spends in the memory; with T frames each query frame pays for one new frame's EM: ``em_per_frame``).

Peak memory at the paper's sizes is the peak of live tensors the computation creates
(:class:`instseg.video.tensor_memory.PeakTensorMemory`, on the same meta tensors: a measurement of
tensor allocations, not of an allocator; on CUDA ``torch.cuda.max_memory_allocated`` would be the
allocator's). It counts op outputs, not a kernel's private workspace, and on meta tensors SDPA runs
its math fallback: the fused row's memory is that fallback's (one attention matrix), not what a
flash kernel would hold; a real CUDA run is needed for that. Wall time is measured at our size (``--hw``, default 32 x 32 = P2 of a 128² frame)
on this machine, medians of ``--repeat`` runs, as ratios to the explicit non-local attention
measured in the same run.

Usage: python benchmarks/bench_attention.py [--lengths 2 4 8] [--hw 1024] [--channels 256] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from instseg.video.layers.attention import nonlocal_attention
from instseg.video.layers.prototypes import em_prototypes, prototype_readout, value_prototypes
from instseg.video.tensor_memory import PeakTensorMemory

PAPER_HW = 180 * 320  # BDD100K 720 x 1280 frames at stride 4 (P2)


def _prototypical(q: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor], k: int, iters: int,
                  init: torch.Tensor) -> torch.Tensor:
    """One query frame reading T memory frames' prototypes (EM per memory frame)."""
    out = q.new_zeros(q.shape[0], q.shape[1], values[0].shape[-1])
    for key, value in zip(keys, values):
        mu, resp = em_prototypes(key, k, iters, float(q.shape[-1]), init=init)
        out = out + prototype_readout(q, mu, value_prototypes(resp, value), float(q.shape[-1]))
    return out


def _inputs(hw: int, channels: int, length: int, k: int, device: str) -> tuple:
    q = torch.randn(1, hw, channels, device=device)
    keys = [torch.randn(1, hw, channels, device=device) for _ in range(length)]
    values = [torch.randn(1, hw, channels, device=device) for _ in range(length)]
    init = torch.randn(1, k, channels, device=device)
    return q, keys, values, init


def _methods(k: int, iters: int) -> dict[str, Callable]:
    return {
        "non-local (explicit)": lambda q, ks, vs, init: nonlocal_attention(q, torch.cat(ks, 1), torch.cat(vs, 1)),
        "non-local (SDPA fused)": lambda q, ks, vs, init: nonlocal_attention(q, torch.cat(ks, 1), torch.cat(vs, 1),
                                                                             fused=True),
        "prototypical": lambda q, ks, vs, init: _prototypical(q, ks, vs, k, iters, init),
    }


def count_flops(fn: Callable, args: tuple) -> int:
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return int(counter.get_total_flops())


def peak_bytes(fn: Callable, args: tuple) -> int:
    with PeakTensorMemory() as memory:
        fn(*args)
    return memory.peak


def wall_time(fn: Callable, args: tuple, repeat: int) -> float:
    fn(*args)
    times = []
    for _ in range(repeat):
        tic = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


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
    methods = _methods(args.prototypes, args.em_iters)
    rows = []
    with torch.no_grad():
        for length in args.lengths:
            paper = _inputs(PAPER_HW, args.channels, length, args.prototypes, "meta")
            ours = _inputs(args.hw, args.channels, length, args.prototypes, "cpu")
            flops = {name: count_flops(fn, paper) for name, fn in methods.items()}
            memory = {name: peak_bytes(fn, paper) for name, fn in methods.items()}
            times = {name: wall_time(fn, ours, args.repeat) for name, fn in methods.items()}
            base_flops, base_time = flops["non-local (explicit)"], times["non-local (explicit)"]
            for name in methods:
                rows.append({"T": length, "method": name, "paper_size_GFLOPs": flops[name] / 1e9,
                             "paper_size_GMACs": flops[name] / 2e9, "flops_vs_nonlocal": flops[name] / base_flops,
                             "paper_size_peak_GB": memory[name] / 1e9,
                             "memory_vs_nonlocal": memory[name] / memory["non-local (explicit)"],
                             f"time_ms_at_{args.hw}": 1e3 * times[name], "time_vs_nonlocal": times[name] / base_time})
    for row in rows:
        print(f"T={row['T']}  {row['method']:<24} {row['paper_size_GFLOPs']:>10.1f} GFLOPs "
              f"({row['flops_vs_nonlocal']:.3f}x non-local) {row['paper_size_peak_GB']:>7.2f} GB "
              f"({row['memory_vs_nonlocal']:.3f}x)  {row[f'time_ms_at_{args.hw}']:>8.2f} ms "
              f"({row['time_vs_nonlocal']:.2f}x)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"settings": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
