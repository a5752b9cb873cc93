"""Flush subnormal floats to zero in every CPU thread torch uses (done on ``import instseg``).

Why: the softmax attention of the non-local (GCN) blocks and of CPMask's affinity unit yields
probabilities far below float32's smallest normal number (~1.2e-38). x86 cores compute with such
subnormal operands and results in microcode, tens of times slower than normal floats, so the
attention heads spent most of their time there: on 2 cores one BCNet-head training step took
317 ms with subnormals and 113 ms with them flushed to zero (and 3x slower than
its FCN twin in the head ablation). Flushing changes results only below 1.2e-38, where float32 has
no precision to speak of; TensorFlow and most inference runtimes flush by default.

The flush-to-zero / denormals-are-zero bits live in each thread's MXCSR register, and a new
thread copies its creator's: set after torch has started its intra-op thread pool, they reach the
calling thread only. Hence the package sets them on import, before any of its work runs. A
script that runs torch ops before ``import instseg`` should call ``torch.set_flush_denormal(True)``
first itself. ``INSTSEG_KEEP_DENORMALS=1`` keeps IEEE subnormals (e.g. to compare numerics).
"""

from __future__ import annotations

import os

import torch

KEEP_ENV = "INSTSEG_KEEP_DENORMALS"


def flush_denormals() -> bool:
    """Flush subnormals in this thread and the threads it starts from now on, unless
    ``INSTSEG_KEEP_DENORMALS=1``. Returns whether flushing is on (False also where the CPU lacks
    the SSE3 support torch needs for it)."""
    if os.environ.get(KEEP_ENV, "") == "1":
        return False
    return torch.set_flush_denormal(True)
