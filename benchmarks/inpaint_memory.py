"""Peak memory of ``instseg inpaint`` against video length: sliding windows against the whole video
at once (issue 14's acceptance: flat in the length with windows).

A toy video (``instseg.video.voin.toy``: 2 objects behind a bar, palette masks) of each length is
written to a temporary folder with a random-init VOIN run (shape model, flow net, generator of
``--channels``; the weights do not change the cost), and ``instseg inpaint`` runs on it in a fresh
subprocess per setting, whose measurements are:

* ``rss``: the process's peak resident memory (``getrusage`` ``ru_maxrss``), and ``rss_growth``:
  that minus the resident memory just before ``inpaint`` started (after importing what it imports;
  the growth still holds the libraries' lazy set-up: thread pools, oneDNN buffers, codecs);
* with ``--trace`` (a second subprocess, so that tracing does not inflate the RSS figures):
  ``tensors``, the peak of live torch tensors (``instseg.video.tensor_memory.PeakTensorMemory``:
  CPU torch has no allocator peak) and ``python``, the tracemalloc peak (Python objects and
  NumPy arrays: frames, masks, flows, propagation buffers).

"windows" uses ``--window`` frames per window and the default overlap (the generator's temporal
receptive field); "whole" sets the window to the video's length (no overlap: one window).

Usage: python benchmarks/inpaint_memory.py [--lengths 50 200] [--size 128] [--window 16] [--trace]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

MIB = 2 ** 20


def _rss_now() -> int:
    """Resident memory of this process now, bytes (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def child(argv: list[str], trace: bool) -> dict[str, float]:
    """Run ``instseg inpaint argv`` here and measure it (module docstring)."""
    import torch

    import instseg.video.cli  # noqa: F401 - everything `inpaint` imports, before the baseline
    import instseg.video.viz  # noqa: F401
    import instseg.video.voin.inpaint_io  # noqa: F401
    import instseg.video.voin.runs  # noqa: F401
    from instseg.cli import main

    torch.set_num_threads(1)
    before = _rss_now()
    if not trace:
        code = main(["inpaint", *argv])
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        return {"code": code, "rss": peak / MIB, "rss_growth": (peak - before) / MIB}
    import tracemalloc

    from instseg.video.tensor_memory import PeakTensorMemory

    tracemalloc.start()
    with PeakTensorMemory() as tensors:
        code = main(["inpaint", *argv])
    python_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"code": code, "tensors": tensors.peak / MIB, "python": python_peak / MIB}


def _measure(argv: list[str], trace: bool) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", json.dumps(argv)] + (["--trace"] if trace else [])
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["code"] != 0:
        raise RuntimeError(f"instseg inpaint exited {result['code']}:\n{done.stderr[-3000:]}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--size", type=int, default=128, help="frame height and width")
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--channels", type=int, default=8, help="generator width of the random-init run")
    parser.add_argument("--trace", action="store_true", help="also the tensor and tracemalloc peaks")
    parser.add_argument("--out", default=None, help="write the rows as JSON")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child), args.trace)))
        return

    from instseg.video.voin.toy import toy_run, toy_video, write_frames, write_id_masks

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = toy_run(root / "run", channels=args.channels)
        for length in args.lengths:
            video = toy_video(length, (args.size, args.size))
            write_frames(root / f"v{length}" / "frames", video.frames)
            write_id_masks(root / f"v{length}" / "masks", video.visible)
            del video
            for mode, window in (("windows", args.window), ("whole", length)):
                argv = ["--checkpoint", str(run), "--video", str(root / f"v{length}" / "frames"),
                        "--masks", str(root / f"v{length}" / "masks"), "--out", str(root / "out"), "--force",
                        "--window", str(window)] + (["--overlap", "0"] if mode == "whole" else [])
                row = {"mode": mode, "frames": length, "window": window} | _measure(argv, trace=False)
                if args.trace:
                    row |= _measure(argv, trace=True)
                row.pop("code")
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
    keys = ["rss", "rss_growth"] + (["tensors", "python"] if args.trace else [])
    lo, hi = min(args.lengths), max(args.lengths)
    print(f"peak memory of `instseg inpaint` (MiB), {args.size}x{args.size} toy video, 2 objects, "
          f"random-init run (generator channels {args.channels}), window {args.window}")
    print(f"{'mode':<8} {'frames':>6} " + " ".join(f"{k:>11}" for k in keys))
    for row in rows:
        print(f"{row['mode']:<8} {row['frames']:>6} " + " ".join(f"{row[k]:>11.1f}" for k in keys))
    for mode in ("windows", "whole"):
        by = {r["frames"]: r for r in rows if r["mode"] == mode}
        print(f"{mode:<8} {hi}/{lo}  " + " ".join(f"{by[hi][k] / by[lo][k]:>10.2f}x" for k in keys))
    if args.out:
        Path(args.out).write_text(json.dumps({"settings": {k: v for k, v in vars(args).items() if k != "child"},
                                              "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
