"""Edge-guided flow completion, the flow stage of the FGVC-like baseline (Gao et al., ECCV 2020).

FGVC completes the flow's edges first (Canny on the flow magnitude, the hole's edges hallucinated
by a learned edge-connection net) and then solves for the flow inside the hole as the smoothest
field that matches the known flow around it and may break across the completed edges. Ours, with
no learned part: the initial flow inside the hole is discarded; the edges are Canny
(scikit-image) on the flow magnitude *outside* the hole, plus the target's amodal contour, which
is known here and is where the motion breaks (it stands in for the edges FGVC hallucinates inside
the hole); the flow inside the hole is the solution of a discrete Laplace equation, one per frame
and component (both components share the matrix, one ``spsolve``), with the known flow around the
hole as its Dirichlet boundary and 4-neighbour weights 1, cut to 0 across edges.

Cuts: a neighbour pair is cut when either pixel is an edge pixel or the two lie on different sides
of the amodal contour (``edge_cuts``). Hole pixels that cut pairs isolate from every known pixel
(an edge pixel itself, or a target with no visible pixel in that frame) get a second solve with
nothing cut, whose boundary is everything known or solved by then: the smooth fill across the
edge, rather than an undefined value.

Flows follow ``flow_targets``: ``forward[k]`` (frame k → k+1) lives on frame k's pixels, so its
hole and contour are frame k's; ``backward[k]`` (frame k+1 → k) lives on frame k+1's.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import spsolve
from skimage.feature import canny

from instseg.errors import InputError

CANNY_SIGMA = 2.0  # Gaussian smoothing of the flow magnitude before Canny, px
CANNY_LOW, CANNY_HIGH = 0.2, 0.4  # hysteresis thresholds on scikit-image's gradient of the smoothed magnitude


def flow_edges(flow: np.ndarray, hole: np.ndarray, sigma: float = CANNY_SIGMA, low: float = CANNY_LOW,
               high: float = CANNY_HIGH) -> np.ndarray:
    """Canny edges (H, W) bool of the magnitude of ``flow`` (H, W, 2), outside ``hole`` only
    (scikit-image's mask: the hole's own values and its rim never make an edge)."""
    magnitude = np.linalg.norm(np.asarray(flow, dtype=np.float64), axis=-1)
    return canny(magnitude, sigma=sigma, low_threshold=low, high_threshold=high, mask=~hole)


def edge_cuts(edges: np.ndarray, regions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which neighbour pairs are cut: ``right`` (H, W-1) between (y, x) and (y, x+1), ``down``
    (H-1, W) between (y, x) and (y+1, x); cut where either pixel is in ``edges`` or the two
    differ in ``regions`` (a label or bool map: the amodal mask)."""
    if edges.shape != regions.shape or edges.ndim != 2:
        raise InputError(f"edges and regions must be the same (H, W) map, got {edges.shape} and {regions.shape}")
    right = edges[:, :-1] | edges[:, 1:] | (regions[:, :-1] != regions[:, 1:])
    down = edges[:-1, :] | edges[1:, :] | (regions[:-1, :] != regions[1:, :])
    return right, down


def _pairs(shape: tuple[int, int], cut_right: np.ndarray, cut_down: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices (a, b) of the neighbour pairs that are not cut."""
    index = np.arange(shape[0] * shape[1]).reshape(shape)
    a = np.concatenate([index[:, :-1][~cut_right], index[:-1, :][~cut_down]])
    b = np.concatenate([index[:, 1:][~cut_right], index[1:, :][~cut_down]])
    return a, b


def _solve(values: np.ndarray, known: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Write into ``values`` (N, C) the harmonic values of the unknown pixels linked (through pairs
    ``a``-``b``) to a known one, the known values as Dirichlet boundary; return which it solved."""
    unknown = ~known
    n = int(unknown.sum())
    if n == 0:
        return np.zeros(len(known), dtype=bool)
    pos = np.full(len(known), -1)
    pos[unknown] = np.arange(n)
    both = unknown[a] & unknown[b]
    to_known = np.concatenate([np.stack([a, b], 1)[unknown[a] & known[b]], np.stack([b, a], 1)[known[a] & unknown[b]]])
    inner, outer = pos[to_known[:, 0]], to_known[:, 1]  # an unknown pixel and its known neighbour
    degree = np.bincount(pos[a[both]], minlength=n) + np.bincount(pos[b[both]], minlength=n) \
        + np.bincount(inner, minlength=n)
    rhs = np.zeros((n, values.shape[1]))
    np.add.at(rhs, inner, values[outer])
    links = coo_matrix((np.ones(int(both.sum())), (pos[a[both]], pos[b[both]])), shape=(n, n)).tocsr()
    _, labels = connected_components(links, directed=False)
    solvable = np.isin(labels, labels[inner])  # a component touching a known pixel
    system = (coo_matrix((degree, (np.arange(n), np.arange(n))), shape=(n, n)) - links - links.T).tocsr()
    keep = np.flatnonzero(solvable)
    solved = np.zeros(len(known), dtype=bool)
    if len(keep):
        x = spsolve(system[keep][:, keep].tocsc(), rhs[keep])
        where = np.flatnonzero(unknown)[keep]
        values[where] = np.asarray(x).reshape(len(keep), values.shape[1])
        solved[where] = True
    return solved


def harmonic_fill(values: np.ndarray, unknown: np.ndarray, cut_right: np.ndarray, cut_down: np.ndarray,
                  record: str | None = None) -> np.ndarray:
    """``values`` (H, W) or (H, W, C) with the ``unknown`` pixels replaced by the solution of the
    Laplace equation over the uncut neighbour pairs (see the module docstring), float64; known
    pixels are returned as given, unknown ones' input values are never read."""
    values = np.asarray(values, dtype=np.float64)
    flat = values.reshape(values.shape[0], values.shape[1], -1)
    h, w, channels = flat.shape
    if unknown.shape != (h, w) or unknown.dtype != bool:
        raise InputError(f"unknown must be bool {(h, w)}, got {unknown.dtype} {unknown.shape}", record=record)
    if cut_right.shape != (h, w - 1) or cut_down.shape != (h - 1, w):
        raise InputError(f"cuts must be (H, W-1) and (H-1, W) = {(h, w - 1)}, {(h - 1, w)}, got "
                         f"{cut_right.shape}, {cut_down.shape}", record=record)
    if not np.isfinite(flat[~unknown]).all():
        raise InputError("known values contain NaN or infinite values", record=record)
    out = flat.reshape(h * w, channels).copy()
    out[unknown.reshape(-1)] = 0.0
    known = ~unknown.reshape(-1)
    known |= _solve(out, known, *_pairs((h, w), cut_right, cut_down))
    if not known.all():  # isolated by the cuts: smooth across them
        known |= _solve(out, known, *_pairs((h, w), np.zeros_like(cut_right), np.zeros_like(cut_down)))
    if not known.all():
        raise InputError(f"{int((~known).sum())} unknown pixels have no known pixel in the frame to start from",
                         record=record)
    return out.reshape(values.shape)


def edge_guided_flow(flow: np.ndarray, hole: np.ndarray, amodal: np.ndarray, sigma: float = CANNY_SIGMA,
                     low: float = CANNY_LOW, high: float = CANNY_HIGH, record: str | None = None) -> np.ndarray:
    """One flow (H, W, 2) with its values inside ``hole`` replaced by the edge-guided Laplace fill
    (float32; the flow outside the hole is returned bit for bit)."""
    flow = np.asarray(flow, dtype=np.float32)
    if not hole.any():
        return flow.copy()
    cuts = edge_cuts(flow_edges(flow, hole, sigma, low, high), amodal)
    filled = harmonic_fill(flow, hole, *cuts, record=record).astype(np.float32)
    return np.where(hole[..., None], filled, flow)


def edge_guided_flows(flows: dict[str, np.ndarray], hole: np.ndarray, amodal: np.ndarray,
                      sigma: float = CANNY_SIGMA, low: float = CANNY_LOW, high: float = CANNY_HIGH,
                      record: str | None = None) -> dict[str, np.ndarray]:
    """Both directions of a clip's flows (``flow_targets`` convention, (L-1, H, W, 2)) completed
    inside the hole (L, H, W) of their source frames."""
    n = len(hole)
    sources = {"forward": range(0, n - 1), "backward": range(1, n)}
    return {d: np.stack([edge_guided_flow(flows[d][k], hole[t], amodal[t], sigma, low, high,
                                          record=f"{record or 'clip'}: {d} flow {k}")
                         for k, t in enumerate(sources[d])]) for d in ("forward", "backward")}
