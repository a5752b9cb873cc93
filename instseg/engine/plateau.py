"""Converged before compared: a validation-loss plateau check that every table prints.

Why: an unconverged head penalises the variant with more loss terms and can manufacture or hide
any effect, so a comparison is read only when every run in it has flattened. The check: the
smoothed validation loss improves by less than ``tolerance`` (relative) over the last ``tail``
of training. A loss that rises over the tail passes the check (it has stopped improving) and is
flagged as ``rising``: overfitting, which a longer budget would not fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

TAIL, TOLERANCE = 0.2, 0.01


@dataclass(frozen=True)
class PlateauCheck:
    passed: bool
    improvement: float  # relative drop of the smoothed loss over the tail (negative: it rose)
    start: float  # smoothed loss where the tail begins
    end: float  # smoothed loss at the end
    points: int  # validation points inside the tail
    tail: float = TAIL
    tolerance: float = TOLERANCE

    @property
    def rising(self) -> bool:
        return self.improvement < -self.tolerance

    def as_dict(self) -> dict:
        return asdict(self) | {"rising": self.rising}


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average (the first points average what exists so far)."""
    v = np.asarray(values, dtype=float)
    csum = np.concatenate([[0.0], np.cumsum(v)])
    idx = np.arange(1, v.size + 1)
    lo = np.maximum(idx - window, 0)
    return (csum[idx] - csum[lo]) / (idx - lo)


def plateau_check(iterations: Sequence[int], losses: Sequence[float], tail: float = TAIL,
                  tolerance: float = TOLERANCE, window: int = 3) -> PlateauCheck:
    """Did the validation loss (measured at ``iterations``, ascending) flatten over the last
    ``tail`` of training? Needs at least two points inside the tail, else it fails."""
    it = np.asarray(iterations, dtype=float)
    loss = np.asarray(losses, dtype=float)
    if it.shape != loss.shape or it.ndim != 1 or it.size == 0:
        raise ValueError(f"need matching 1-D iterations and losses, got {it.shape} and {loss.shape}")
    if not np.isfinite(loss).all():
        return PlateauCheck(False, float("nan"), float("nan"), float("nan"), 0, tail, tolerance)
    smoothed = smooth(loss, window)
    begin = it[-1] - tail * it[-1]
    inside = np.flatnonzero(it >= begin)
    if inside.size < 2:
        return PlateauCheck(False, float("nan"), float(smoothed[-1]), float(smoothed[-1]), int(inside.size), tail,
                            tolerance)
    start, end = float(smoothed[inside[0]]), float(smoothed[-1])
    improvement = (start - end) / abs(start) if start else 0.0
    return PlateauCheck(bool(improvement < tolerance), float(improvement), start, end, int(inside.size), tail,
                        tolerance)


def plateau_summary(checks: Iterable[PlateauCheck | dict], what: str = "runs") -> str:
    """One line for under a table: how many runs passed, and the worst improvement."""
    found = [c if isinstance(c, dict) else c.as_dict() for c in checks]
    if not found:
        return f"Plateau check: no {what}."
    passed = sum(bool(c["passed"]) for c in found)
    worst = max(found, key=lambda c: -np.inf if np.isnan(c["improvement"]) else c["improvement"])
    rising = sum(bool(c["rising"]) for c in found)
    tail, tol = found[0]["tail"], found[0]["tolerance"]
    verdict = "all converged" if passed == len(found) else f"**{len(found) - passed} NOT converged**"
    return (f"Plateau check (smoothed validation loss improves < {tol:.0%} over the last {tail:.0%} of "
            f"training): {passed}/{len(found)} {what} pass — {verdict}; largest late improvement "
            f"{worst['improvement']:+.2%}" + (f"; {rising} rising (overfitting)" if rising else "") + ".")
