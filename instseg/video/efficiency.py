"""Cost of PCAN's prototypical attention against non-local and transformer attention (Table 5.5's
question), for ONE query frame reading a memory of T frames, built from the tested layers.

Why a module: the benchmark script (``benchmarks/bench_attention.py``) and notebook 06 measure the
same five variants the same way, so the code lives here once.

- FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` on meta tensors (nothing is allocated, so the
  paper's sizes fit any machine). It counts matrix products only, a multiply-add as 2 FLOPs; GMACs =
  GFLOPs / 2 is reported beside (a paper may count one MAC as one FLOP).
- Peak memory: on CUDA the allocator's ``torch.cuda.max_memory_allocated`` (reset before each run);
  elsewhere the peak of live tensors the computation creates
  (:class:`instseg.video.tensor_memory.PeakTensorMemory`, on meta tensors). On meta, SDPA runs its
  math fallback: the fused rows' memory is that fallback's, not a flash kernel's.
- Wall time: medians of repeated runs on a real device, as ratios to the explicit non-local
  attention measured in the same run.

Sizes: ``hw`` is the positions of one frame, or a sequence of FPN levels' positions (each level
attended separately, costs of all levels measured as one computation). The memory of a prototypical
attention holds one EM per memory frame (a frame's prototypes are computed once per frame it spends
in the memory, so with T frames the query pays for T EMs here: an upper bound per query frame).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import pandas as pd
import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from instseg.video.layers.attention import MultiHeadAttention, nonlocal_attention
from instseg.video.layers.prototypes import em_prototypes, prototype_readout, value_prototypes
from instseg.video.tensor_memory import PeakTensorMemory

PAPER_HW = 180 * 320  # BDD100K 720 x 1280 frames at stride 4 (P2)
PAPER_CHANNELS, PAPER_PROTOTYPES, PAPER_EM_ITERS = 256, 30, 3
OUR_LEVELS = (16 * 16, 8 * 8, 4 * 4)  # P3-P5 of a 128 x 128 frame, the repo's PCAN frame module
OUR_CHANNELS, OUR_KEY_CHANNELS = 32, 16
HEADS = 8
BASELINE = "non-local (explicit)"
METHODS = ("prototypical", "non-local (explicit)", "non-local (SDPA)", "transformer (explicit)", "transformer (SDPA)")
# Frame sizes a Table 5.5 could have been measured at: (name, height, width) of the frame; strides 4-32.
CANDIDATE_FRAMES = (("BDD100K 720x1280", 720, 1280), ("YouTube-VIS 360x640", 360, 640))


@dataclass(frozen=True)
class Level:
    """One feature level's inputs: the query frame's keys [1, HW, Ck] and features [1, HW, C] (a
    transformer's queries), T memory frames' keys and values, and the EM's initial prototypes."""

    queries: Tensor
    features: Tensor
    keys: tuple[Tensor, ...]
    values: tuple[Tensor, ...]
    init: Tensor


Method = Callable[[Sequence[Level]], list[Tensor]]


def our_prototypes(positions: int) -> int:
    """The repo's per-level prototype count: 30, or fewer on a level too small to fill them."""
    return min(PAPER_PROTOTYPES, positions // 4)


def _as_levels(hw: int | Sequence[int], prototypes: int | Sequence[int]) -> list[tuple[int, int]]:
    hws = [hw] if isinstance(hw, int) else list(hw)
    ks = [prototypes] * len(hws) if isinstance(prototypes, int) else list(prototypes)
    if len(ks) != len(hws):
        raise ValueError(f"{len(ks)} prototype counts for {len(hws)} levels")
    return list(zip(hws, ks))


def make_inputs(hw: int | Sequence[int], channels: int, length: int, prototypes: int | Sequence[int],
                device: str | torch.device, key_channels: int | None = None) -> list[Level]:
    """Random inputs for one query frame and a memory of ``length`` frames, per level."""
    ck = key_channels or channels

    def rand(*shape: int) -> Tensor:
        return torch.randn(1, *shape, device=device)

    return [Level(rand(n, ck), rand(n, channels), tuple(rand(n, ck) for _ in range(length)),
                  tuple(rand(n, channels) for _ in range(length)), rand(k, ck))
            for n, k in _as_levels(hw, prototypes)]


def prototypical(level: Level, iters: int) -> Tensor:
    """The query reads every memory frame's prototypes (EM per memory frame), readouts summed."""
    temperature = float(level.queries.shape[-1])
    out = level.queries.new_zeros(level.queries.shape[1], level.values[0].shape[-1])[None]
    for key, value in zip(level.keys, level.values):
        mu, resp = em_prototypes(key, level.init.shape[1], iters, temperature, init=level.init)
        out = out + prototype_readout(level.queries, mu, value_prototypes(resp, value), temperature)
    return out


def methods(channels: int, em_iters: int, device: str | torch.device) -> dict[str, Method]:
    """The five variants, each mapping a list of levels to their outputs. The transformers' four
    projections (``channels`` wide, ``HEADS`` heads) are part of their cost."""
    transformers = {fused: MultiHeadAttention(channels, HEADS, fused).to(device).eval() for fused in (False, True)}

    def nonlocal_(fused: bool) -> Method:
        return lambda levels: [nonlocal_attention(lv.queries, torch.cat(lv.keys, 1), torch.cat(lv.values, 1),
                                                  fused=fused) for lv in levels]

    def transformer(fused: bool) -> Method:
        return lambda levels: [transformers[fused](lv.features, torch.cat(lv.values, 1)) for lv in levels]

    return {"prototypical": lambda levels: [prototypical(lv, em_iters) for lv in levels],
            "non-local (explicit)": nonlocal_(False), "non-local (SDPA)": nonlocal_(True),
            "transformer (explicit)": transformer(False), "transformer (SDPA)": transformer(True)}


# The inputs each variant reads (not counted by ``peak_bytes``; a paper's memory may include them;
# the transformer's 4 C^2 weights are left out).
READS = {"prototypical": ("queries", "keys", "values", "init"), "non-local": ("queries", "keys", "values"),
         "transformer": ("features", "values")}


def input_bytes(method: str, levels: Sequence[Level]) -> int:
    """Bytes of the input tensors ``method`` reads (the query frame and the memory frames)."""
    total = 0
    for level in levels:
        for field in READS[method.split(" (")[0]]:
            value = getattr(level, field)
            total += sum(t.numel() * t.element_size() for t in (value if isinstance(value, tuple) else (value,)))
    return total


def count_flops(fn: Callable, args: tuple) -> int:
    """FLOPs of ``fn(*args)`` as FlopCounterMode counts them (matrix products, 2 per MAC)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args)
    return int(counter.get_total_flops())


def peak_bytes(fn: Callable, args: tuple) -> int:
    """Peak bytes of the live tensors ``fn(*args)`` creates (inputs not counted; meta works)."""
    with torch.no_grad(), PeakTensorMemory() as memory:
        fn(*args)
    return memory.peak


def cuda_peak_bytes(fn: Callable, args: tuple) -> int:
    """The CUDA allocator's peak above what was allocated before ``fn(*args)``."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    with torch.no_grad():
        fn(*args)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def wall_time(fn: Callable, args: tuple, repeat: int) -> float:
    """Median seconds of ``repeat`` runs after one warm-up run."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times = []
    with torch.no_grad():
        fn(*args)
        for _ in range(repeat):
            sync()
            tic = time.perf_counter()
            fn(*args)
            sync()
            times.append(time.perf_counter() - tic)
    return statistics.median(times)


def _use_cuda(device: str) -> bool:
    return device == "cuda" and torch.cuda.is_available()


def measure(lengths: Sequence[int], hw: int | Sequence[int], channels: int, prototypes: int | Sequence[int],
            em_iters: int, device: str = "meta", repeat: int = 5, time_it: bool = False,
            key_channels: int | None = None) -> pd.DataFrame:
    """One row per (T, method): GFLOPs, GMACs, peak MB (1e6 bytes) and its source, wall ms when
    ``time_it`` (on ``device``, never meta), and each figure's ratio to the explicit non-local's."""
    if time_it and device == "meta":
        raise ValueError("wall time needs a real device, not meta")
    cuda = _use_cuda(device)
    rows = []
    for length in lengths:
        meta = make_inputs(hw, channels, length, prototypes, "meta", key_channels)
        real = make_inputs(hw, channels, length, prototypes, device, key_channels) if time_it or cuda else None
        variants, real_variants = methods(channels, em_iters, "meta"), methods(channels, em_iters, device)
        for name, fn in variants.items():
            flops = count_flops(fn, (meta,))
            memory = cuda_peak_bytes(real_variants[name], (real,)) if cuda else peak_bytes(fn, (meta,))
            seconds = wall_time(real_variants[name], (real,), repeat) if time_it else math.nan
            rows.append({"T": length, "method": name, "positions": sum(n for n, _ in _as_levels(hw, prototypes)),
                         "GFLOPs": flops / 1e9, "GMACs": flops / 2e9, "peak_MB": memory / 1e6,
                         "inputs_MB": input_bytes(name, meta) / 1e6,
                         "memory_source": "cuda.max_memory_allocated" if cuda else "PeakTensorMemory (meta)",
                         "time_ms": 1e3 * seconds})
    return with_ratios(pd.DataFrame(rows))


def with_ratios(df: pd.DataFrame, baseline: str = BASELINE) -> pd.DataFrame:
    """Add ``*_vs_nonlocal`` columns: each figure over the ``baseline`` method's at the same T."""
    base = df[df.method == baseline].set_index("T")
    out = df.copy()
    for column, ratio in (("GFLOPs", "flops_vs_nonlocal"), ("peak_MB", "memory_vs_nonlocal"),
                          ("time_ms", "time_vs_nonlocal")):
        out[ratio] = out[column] / out["T"].map(base[column])
    return out


def ratio_table(df: pd.DataFrame, of: str = "prototypical") -> pd.DataFrame:
    """How many times cheaper ``of`` is than each other method, per T (FLOPs, memory, time)."""
    figures = ["GFLOPs", "peak_MB", "time_ms"]
    ours = df[df.method == of].set_index("T")[figures]
    others = df[df.method != of]
    rows = [{"T": row["T"], "versus": row["method"], **{f"{f}_ratio": row[f] / ours.loc[row["T"], f] for f in figures}}
            for _, row in others.sort_values("method", key=lambda m: m.map(METHODS.index), kind="stable").iterrows()]
    return pd.DataFrame(rows)


def scaling_curves(lengths: Sequence[int], hws: Sequence[int], fixed_hw: int, fixed_length: int, channels: int,
                   prototypes: int, em_iters: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cost (FLOPs, peak memory, on meta) vs T at ``fixed_hw``, and vs HW at ``fixed_length``."""
    versus_t = measure(lengths, fixed_hw, channels, prototypes, em_iters)
    versus_hw = pd.concat([measure([fixed_length], n, channels, prototypes, em_iters) for n in hws], ignore_index=True)
    return versus_t, versus_hw


def growth_exponent(lengths: Sequence[int], costs: Sequence[float]) -> float:
    """The log-log slope of cost against T between the first and last length (1: linear)."""
    return math.log(costs[-1] / costs[0]) / math.log(lengths[-1] / lengths[0])


def _cost_polynomial(figure: Callable[[int], int], step: int) -> tuple[Fraction, Fraction, Fraction]:
    """(a, b, c) of figure(hw) = a hw^2 + b hw + c, exact from hw = step, 2 step, 3 step (the costs
    of these attentions are at most quadratic in the positions)."""
    f1, f2, f3 = (Fraction(figure(i * step)) for i in (1, 2, 3))
    a = (f3 - 2 * f2 + f1) / (2 * step * step)
    b = (f2 - f1) / step - 3 * a * step
    return a, b, f1 - a * step * step - b * step


def implied_positions(figure: Callable[[int], int], target: float, step: int = 1024) -> float:
    """The positions per frame at which ``figure(hw)`` reaches ``target`` (NaN if it never does)."""
    a, b, c = (float(x) for x in _cost_polynomial(figure, step))
    if a == 0:
        return (target - c) / b if b else math.nan
    disc = b * b - 4 * a * (c - target)
    return (-b + math.sqrt(disc)) / (2 * a) if disc >= 0 else math.nan


def candidate_sizes() -> pd.DataFrame:
    """Feature-map positions of the candidate frames at FPN strides 4-32 (P2-P5); maps of equal size
    share a row (their names joined by " = ")."""
    sizes = pd.DataFrame([{"size": f"{name} P{int(math.log2(s))}", "positions": math.ceil(h / s) * math.ceil(w / s)}
                          for name, h, w in CANDIDATE_FRAMES for s in (4, 8, 16, 32)])
    return (sizes.groupby("positions", sort=False)["size"].agg(" = ".join).reset_index()[["size", "positions"]]
            .sort_values("positions", ascending=False, ignore_index=True))


PAPER_COLUMNS = {"prototypical": "proto", "non-local (explicit)": "nonlocal", "transformer (explicit)": "transformer"}


def _figures(fn: Method, method: str, length: int, channels: int, prototypes: int) -> dict[str, Callable[[int], int]]:
    """FLOPs, peak bytes and peak + input bytes of ``method`` as functions of the positions per frame."""
    def inputs(hw: int) -> list[Level]:
        return make_inputs(hw, channels, length, prototypes, "meta")

    return {"flops": lambda hw: count_flops(fn, (inputs(hw),)), "memory": lambda hw: peak_bytes(fn, (inputs(hw),)),
            "held": lambda hw: peak_bytes(fn, (inputs(hw),)) + input_bytes(method, inputs(hw))}


def paper_fit(paper: pd.DataFrame, channels: int = PAPER_CHANNELS, prototypes: int = PAPER_PROTOTYPES,
              em_iters: int = PAPER_EM_ITERS) -> pd.DataFrame:
    """For each of Table 5.5's (method, T): the positions per frame at which our FLOP count
    reproduces its FLOPs(B) read as MACs and read as FLOPs, and at which our peak memory (alone, and
    plus the inputs the method reads) reproduces its Memory(M) read as 1e6 bytes."""
    variants = methods(channels, em_iters, "meta")
    rows = []
    for row in paper.itertuples():
        for method, prefix in PAPER_COLUMNS.items():
            figure = _figures(variants[method], method, row.length, channels, prototypes)
            paper_flops, paper_mb = getattr(row, f"{prefix}_flops_b"), getattr(row, f"{prefix}_memory_m")
            rows.append({"T": row.length, "method": method, "paper_FLOPs_B": paper_flops,
                         "positions_if_MACs": implied_positions(figure["flops"], 2e9 * paper_flops),
                         "positions_if_FLOPs": implied_positions(figure["flops"], 1e9 * paper_flops),
                         "paper_memory_MB": paper_mb,
                         "positions_for_memory": implied_positions(figure["memory"], 1e6 * paper_mb),
                         "positions_for_memory_with_inputs": implied_positions(figure["held"], 1e6 * paper_mb)})
    return pd.DataFrame(rows)


def nearest_size(positions: float, candidates: pd.DataFrame) -> tuple[str, float]:
    """The candidate feature map closest to ``positions`` (in log ratio), and positions / its size."""
    if not math.isfinite(positions) or positions <= 0:
        return "none", math.nan
    best = min(candidates.itertuples(), key=lambda c: abs(math.log(positions / c.positions)))
    return best.size, positions / best.positions


def fit_summary(fit: pd.DataFrame, candidates: pd.DataFrame, tolerance: float = 0.10) -> pd.DataFrame:
    """Per method and reading of the paper (FLOPs as MACs, as FLOPs; memory): the implied positions
    over T, whether they agree across T within ``tolerance`` (one size explains the whole row), the
    nearest candidate size and whether every T lies within ``tolerance`` of it."""
    readings = {"FLOPs read as MACs": "positions_if_MACs", "FLOPs read as FLOPs": "positions_if_FLOPs",
                "memory (1e6 bytes)": "positions_for_memory",
                "memory + inputs (1e6 bytes)": "positions_for_memory_with_inputs"}
    rows = []
    for method, group in fit.groupby("method", sort=False):
        for reading, column in readings.items():
            values = group[column].to_numpy(dtype=float)
            size, ratio = nearest_size(float(statistics.geometric_mean(values)), candidates)
            ratios = values / candidates.set_index("size").positions.get(size, math.nan)
            rows.append({"method": method, "reading": reading, "positions_min": values.min(),
                         "positions_max": values.max(),
                         "same_size_for_all_T": values.max() / values.min() <= 1 + tolerance,
                         "nearest_size": size, "positions_over_nearest": ratio,
                         "fits_nearest": bool((abs(ratios - 1) <= tolerance).all())})
    return pd.DataFrame(rows)
