"""Converged before compared: a validation-loss plateau check that every table prints.

Why: an unconverged head penalises the variant with more loss terms and can manufacture or hide
any effect, so a comparison is read only when every run in it has flattened. The check: the
smoothed validation loss improves by less than ``tolerance`` (relative) over the last ``tail``
of training. A loss that rises over the tail passes the check (it has stopped improving) and is
flagged as ``rising``: overfitting, which a longer budget would not fix.

A step schedule can fool that check: after its last learning-rate decay any run flattens, because
the small rate barely moves it, however far from converged it is (measured: an FCN head passed
at 300 iterations with a validation loss 18% above the same head's at 2,000). So with
``phase_end`` (the iteration of the last decay) the same test also runs on the last ``tail`` of
the constant-rate phase before it, and the run passes only if both windows are flat.
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
    phase_improvement: float | None = None  # the same over the tail of the phase before ``phase_end``

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


def _window(it: np.ndarray, smoothed: np.ndarray, last: int, tail: float) -> tuple[float, float, float, int]:
    """(improvement, start, end, points) over the last ``tail`` of iterations up to index ``last``."""
    inside = np.flatnonzero((it >= it[last] * (1 - tail)) & (np.arange(it.size) <= last))
    if inside.size < 2:
        return float("nan"), float(smoothed[last]), float(smoothed[last]), int(inside.size)
    start, end = float(smoothed[inside[0]]), float(smoothed[last])
    return ((start - end) / abs(start) if start else 0.0), start, end, int(inside.size)


def plateau_check(iterations: Sequence[int], losses: Sequence[float], tail: float = TAIL,
                  tolerance: float = TOLERANCE, window: int = 3, phase_end: int | None = None) -> PlateauCheck:
    """Did the validation loss (measured at ``iterations``, ascending) flatten over the last
    ``tail`` of training — and, with ``phase_end``, over the last ``tail`` of the phase up to that
    iteration too? A window with fewer than two points fails."""
    it = np.asarray(iterations, dtype=float)
    loss = np.asarray(losses, dtype=float)
    if it.shape != loss.shape or it.ndim != 1 or it.size == 0:
        raise ValueError(f"need matching 1-D iterations and losses, got {it.shape} and {loss.shape}")
    if not np.isfinite(loss).all():
        return PlateauCheck(False, float("nan"), float("nan"), float("nan"), 0, tail, tolerance)
    smoothed = smooth(loss, window)
    improvement, start, end, points = _window(it, smoothed, it.size - 1, tail)
    passed = bool(improvement < tolerance)
    phase = None
    if phase_end is not None:
        before = np.flatnonzero(it <= phase_end)
        phase = _window(it, smoothed, int(before[-1]), tail)[0] if before.size else float("nan")
        passed = passed and bool(phase < tolerance)
    return PlateauCheck(passed, float(improvement), start, end, points, tail, tolerance, phase)


def plateau_summary(checks: Iterable[PlateauCheck | dict], what: str = "runs") -> str:
    """One line for under a table: how many runs passed, and the worst improvement."""
    found = [c if isinstance(c, dict) else c.as_dict() for c in checks]
    if not found:
        return f"Plateau check: no {what}."
    passed = sum(bool(c["passed"]) for c in found)
    worst = max(found, key=lambda c: -np.inf if np.isnan(c["improvement"]) else c["improvement"])
    phases = [c["phase_improvement"] for c in found if c.get("phase_improvement") is not None]
    rising = sum(bool(c["rising"]) for c in found)
    tail, tol = found[0]["tail"], found[0]["tolerance"]
    verdict = "all converged" if passed == len(found) else f"**{len(found) - passed} NOT converged**"
    where = " and of the phase before the last learning-rate decay" if phases else ""
    return (f"Plateau check (smoothed validation loss improves < {tol:.0%} over the last {tail:.0%} of "
            f"training{where}): {passed}/{len(found)} {what} pass — {verdict}; largest late improvement "
            f"{worst['improvement']:+.2%}" + (f", before the decay {np.nanmax(phases):+.2%}" if phases else "")
            + (f"; {rising} rising (overfitting)" if rising else "") + ".")


def plateau_record(checks: Iterable[PlateauCheck | dict]) -> dict:
    """What ``metrics.json`` keeps of a table's plateau checks: runs, passed, the worst late improvement."""
    found = [c if isinstance(c, dict) else c.as_dict() for c in checks]
    return {"runs": len(found), "passed": sum(bool(c["passed"]) for c in found),
            "max_late_improvement": float(np.nanmax([c["improvement"] for c in found])) if found else None}
