"""The learning-rate schedule as a pure function of the iteration.

A pure function needs no scheduler state in the checkpoint (the iteration is enough), so a
resumed run cannot drift from an uninterrupted one, and the schedule can be plotted or tested
without building an optimizer.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence


def lr_at(
    iteration: int,
    base_lr: float,
    *,
    warmup_iters: int = 0,
    warmup_factor: float = 1.0,
    steps: Sequence[int] = (),
    gamma: float = 0.1,
) -> float:
    """Learning rate of the optimizer step with 0-based index ``iteration``.

    Linear warmup (as detectron2's ``WarmupMultiStepLR``): the factor rises linearly from
    ``warmup_factor`` at iteration 0 to 1 at ``warmup_iters``. Multi-step decay: multiplied by
    ``gamma`` once for every step ``s <= iteration``. Both factors multiply when they overlap.
    """
    if iteration < warmup_iters:
        alpha = iteration / warmup_iters
        warmup = warmup_factor * (1 - alpha) + alpha
    else:
        warmup = 1.0
    return base_lr * warmup * gamma ** bisect_right(steps, iteration)
