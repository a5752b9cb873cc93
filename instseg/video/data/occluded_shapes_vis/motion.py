"""Object trajectories of OccludedShapes-VIS: the motions that make tracking and temporal models matter.

Every track is a per-frame similarity pose (centre, angle, radius) plus a depth, in frame pixels.
Translation follows a velocity with smooth random acceleration (an AR(1) acceleration whose
integral is pulled back to the drawn velocity, so speeds stay in range); angles turn at a drawn
rate; radii breathe within the image benchmark's radius range; depths oscillate, so the order of
overlapping objects changes over time. Three kinds of track are drawn:

* free tracks that start in the frame and wander (they may drift out);
* border tracks that cross a frame edge at a drawn time, entering or leaving;
* scheduled pairs, laid out *relative* to one partner so the event happens by construction:
  a full occlusion (a large convex occluder passes over a small object, in front of it, hiding it
  for a few frames, after which it reappears) and a look-alike crossing (two instances of one
  category whose paths cross). The partner's own random motion is inherited, so neither moves
  in a straight line. The caller verifies the events on the rendered masks and redraws if needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from instseg.data.occluded_shapes import CATEGORIES, Category
from instseg.data.shapes import ShapeSpec, render_shape

if TYPE_CHECKING:
    from instseg.video.data.occluded_shapes_vis.build import VideoBenchmarkConfig

OCCLUDER_SHAPES: tuple[str, ...] = ("disc", "square")  # solid outlines whose inscribed circle is large
_INSCRIBED = {"disc": float(np.cos(np.pi / 48)), "square": 0.8}  # inscribed radius / radius, aspect 1


@dataclass
class TrackMotion:
    """One track's drawn motion; ``role`` says why it was drawn (free, border, occluded, occluder, lookalike)."""

    category: Category
    aspect: float
    centers: np.ndarray  # (T, 2) x, y
    angles: np.ndarray  # (T,)
    radii: np.ndarray  # (T,) pixels
    depths: np.ndarray  # (T,) larger = closer
    role: str


def pose_map(pose_from: tuple[float, ...], pose_to: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) with p_to = A @ p_from + b: the similarity taking an object's pixels from one pose
    (cx, cy, angle, radius) to another, i.e. T_to o T_from^-1 (rotation as in ``shapes._to_pixels``)."""
    cx0, cy0, a0, r0 = pose_from[:4]
    cx1, cy1, a1, r1 = pose_to[:4]
    k, d = r1 / r0, a1 - a0
    A = k * np.array([[np.cos(d), -np.sin(d)], [np.sin(d), np.cos(d)]])
    b = np.array([cx1, cy1]) - A @ np.array([cx0, cy0])
    return A, b


def smooth_path(rng: np.random.Generator, length: int, anchor_t: int, anchor_xy: np.ndarray,
                velocity: np.ndarray, accel_std: float) -> np.ndarray:
    """(T, 2) centres through ``anchor_xy`` at ``anchor_t``, moving at ``velocity`` plus a smoothly
    varying deviation (AR(1) acceleration, deviation decaying by 0.9 a frame)."""
    noise = rng.normal(0.0, accel_std, size=(length, 2))
    acc, dev = np.zeros(2), np.zeros(2)
    vel = np.empty((length, 2))
    for t in range(length):
        acc = 0.8 * acc + noise[t]
        dev = 0.9 * dev + acc
        vel[t] = velocity + dev
    pos = np.concatenate([np.zeros((1, 2)), np.cumsum(vel[:-1], axis=0)])
    return pos - pos[anchor_t] + np.asarray(anchor_xy, dtype=np.float64)


def oscillation(rng: np.random.Generator, length: int, amplitude: float, period: tuple[float, float]) -> np.ndarray:
    """A slow sinusoid (drawn period and phase) for quantities that drift: scale, depth, illumination."""
    t = np.arange(length)
    return amplitude * np.sin(2 * np.pi * t / float(rng.uniform(*period)) + float(rng.uniform(0, 2 * np.pi)))


def _direction(angle: float) -> np.ndarray:
    return np.array([np.cos(angle), np.sin(angle)])


def _radii(cfg: "VideoBenchmarkConfig", rng: np.random.Generator, radius: float,
           band: tuple[float, float] | None = None) -> np.ndarray:
    """Radii (pixels) breathing around ``radius`` (a fraction of the side) within ``band`` (default the
    radius range), so a scheduled full cover stays possible however the two objects scale."""
    lo, hi = (v * cfg.image_size for v in (band or cfg.radius_range))
    scale = np.exp(oscillation(rng, cfg.frames_per_video, cfg.scale_amplitude, (0.75 * cfg.frames_per_video,
                                                                                   2.5 * cfg.frames_per_video)))
    return np.clip(radius * cfg.image_size * scale, lo, hi)


def _angles(cfg: "VideoBenchmarkConfig", rng: np.random.Generator) -> np.ndarray:
    spin = float(rng.uniform(-cfg.max_rotation_speed, cfg.max_rotation_speed))
    wobble = np.cumsum(rng.normal(0.0, 0.2 * cfg.max_rotation_speed, size=cfg.frames_per_video))
    return float(rng.uniform(0, 2 * np.pi)) + spin * np.arange(cfg.frames_per_video) + wobble


def _depths(cfg: "VideoBenchmarkConfig", rng: np.random.Generator) -> np.ndarray:
    n = cfg.frames_per_video
    return float(rng.uniform(0.0, 4.0)) + oscillation(rng, n, float(rng.uniform(0.3, 1.5)), (0.5 * n, 2.0 * n))


def _track(cfg: "VideoBenchmarkConfig", rng: np.random.Generator, category: Category, radius: float,
           aspect: float, centers: np.ndarray, role: str, band: tuple[float, float] | None = None) -> TrackMotion:
    return TrackMotion(category, aspect, centers, _angles(cfg, rng), _radii(cfg, rng, radius, band),
                       _depths(cfg, rng), role)


def _random_category(rng: np.random.Generator) -> Category:
    return CATEGORIES[int(rng.integers(len(CATEGORIES)))]


def free_track(cfg: "VideoBenchmarkConfig", rng: np.random.Generator) -> TrackMotion:
    """A track that starts anywhere in the frame (as the image benchmark places objects) and wanders."""
    size = cfg.image_size
    category, radius = _random_category(rng), float(rng.uniform(*cfg.radius_range))
    start = rng.uniform(0.1 * size, 0.9 * size, size=2)
    velocity = float(rng.uniform(*cfg.speed_range)) * _direction(float(rng.uniform(0, 2 * np.pi)))
    centers = smooth_path(rng, cfg.frames_per_video, 0, start, velocity, cfg.accel_std)
    return _track(cfg, rng, category, radius, float(rng.uniform(0.75, 1.0)), centers, "free")


def border_track(cfg: "VideoBenchmarkConfig", rng: np.random.Generator) -> TrackMotion:
    """A track whose centre crosses a frame edge at a drawn frame, inwards (entering) or outwards."""
    size, n = cfg.image_size, cfg.frames_per_video
    category, radius = _random_category(rng), float(rng.uniform(*cfg.radius_range))
    side = int(rng.integers(4))
    along = float(rng.uniform(0.2, 0.8)) * size
    point = [np.array([along, 0.0]), np.array([size - 1.0, along]), np.array([along, size - 1.0]),
             np.array([0.0, along])][side]
    inward = _direction([np.pi / 2, np.pi, -np.pi / 2, 0.0][side] + float(rng.uniform(-0.5, 0.5)))
    sign = 1.0 if rng.random() < 0.5 else -1.0  # entering or leaving
    velocity = sign * float(rng.uniform(*cfg.border_speed_range)) * inward
    centers = smooth_path(rng, n, int(rng.integers(1, n - 1)), point, velocity, cfg.accel_std)
    return _track(cfg, rng, category, radius, float(rng.uniform(0.75, 1.0)), centers, "border")


def _extent(shape: str, radius: float, aspect: float, angle: float) -> float:
    """Largest distance of the rendered outline's pixels from its centre (any shape, measured)."""
    half = int(np.ceil(2 * radius)) + 2
    mask = render_shape(ShapeSpec(shape, float(half), float(half), radius, angle, aspect), 2 * half + 1, 2 * half + 1)
    ys, xs = np.nonzero(mask)
    return float(np.sqrt((xs - half) ** 2 + (ys - half) ** 2).max()) + 0.75 if len(xs) else 0.0


def occlusion_pair(cfg: "VideoBenchmarkConfig", rng: np.random.Generator) -> list[TrackMotion]:
    """A small object and a large solid occluder that passes over it, in front, hiding it completely
    for about ``full_occlusion_frames`` frames around a drawn frame ``t_c``; empty if the radius range
    leaves no room for a full cover (after a few draws of the two outlines)."""
    size, n = cfg.image_size, cfg.frames_per_video
    lo, hi = cfg.radius_range
    small_band, occ_band = (lo, lo + 0.1 * (hi - lo)), (hi - 0.1 * (hi - lo), hi)
    t_c = int(rng.integers(n // 3, max(2 * n // 3, n // 3 + 1) + 1))
    at = rng.uniform(0.3 * size, 0.7 * size, size=2)
    velocity = float(rng.uniform(0.0, 0.5 * cfg.speed_range[1])) * _direction(float(rng.uniform(0, 2 * np.pi)))
    centers = smooth_path(rng, n, t_c, at, velocity, cfg.accel_std)
    for _ in range(4):
        small, small_aspect = _random_category(rng), float(rng.uniform(0.75, 1.0))
        occluder_shape = OCCLUDER_SHAPES[int(rng.integers(len(OCCLUDER_SHAPES)))]
        occluder = next(c for c in CATEGORIES if c.shape == occluder_shape)
        occ_aspect = float(rng.uniform(0.95, 1.0))
        a = _track(cfg, rng, small, float(rng.uniform(*small_band)), small_aspect, centers, "occluded", small_band)
        b = _track(cfg, rng, occluder, float(rng.uniform(*occ_band)), occ_aspect, centers, "occluder", occ_band)
        reach = max(_extent(small.shape, float(r), small_aspect, float(ang)) for r, ang in zip(a.radii, a.angles))
        margin = _INSCRIBED[occluder.shape] * occ_aspect * float(b.radii.min()) - reach - 1.0
        if margin >= 1.0:
            break
    else:
        return []
    frames = float(rng.uniform(cfg.full_occlusion_frames[0], cfg.full_occlusion_frames[1] + 1))
    # Fast enough that the small object is less than half covered for `full_occlusion_lead` frames
    # on each side of the cover (half covered -> hidden takes ~reach / speed frames), so a tracker
    # can see it before it vanishes and after it comes back; a slow pass would keep it a sliver.
    room = min(t_c, n - 1 - t_c) - frames / 2 - cfg.full_occlusion_lead
    speed = max(2.0 * margin / frames, reach / max(room, 1.0))
    heading = float(rng.uniform(0, 2 * np.pi))
    offset = float(rng.uniform(-0.3, 0.3)) * margin
    t = np.arange(n)[:, None] - t_c
    b.centers = centers + t * speed * _direction(heading) + offset * _direction(heading + np.pi / 2)
    # in front while it covers (|t - t_c| below a quarter period), behind far from t_c: the order swaps
    period = max(4.0 * (frames / 2 + 1.0), float(rng.uniform(0.8, 1.6)) * n)
    b.depths = a.depths + float(rng.uniform(0.5, 1.5)) * np.cos(2 * np.pi * t[:, 0] / period)
    return [a, b]


def lookalike_pair(cfg: "VideoBenchmarkConfig", rng: np.random.Generator) -> list[TrackMotion]:
    """Two instances of one category (jittered looks of one per-video appearance) whose paths cross."""
    size, n = cfg.image_size, cfg.frames_per_video
    category = _random_category(rng)
    t_x = int(rng.integers(n // 4, max(3 * n // 4, n // 4 + 1) + 1))
    at = rng.uniform(0.25 * size, 0.75 * size, size=2)
    velocity = float(rng.uniform(*cfg.speed_range)) * _direction(float(rng.uniform(0, 2 * np.pi)))
    centers = smooth_path(rng, n, t_x, at, velocity, cfg.accel_std)
    a = _track(cfg, rng, category, float(rng.uniform(*cfg.radius_range)), float(rng.uniform(0.75, 1.0)), centers,
               "lookalike")
    b = _track(cfg, rng, category, float(rng.uniform(*cfg.radius_range)), float(rng.uniform(0.75, 1.0)), centers,
               "lookalike")
    heading = float(rng.uniform(0, 2 * np.pi))
    offset = float(rng.uniform(-0.3, 0.3)) * float(a.radii.mean() + b.radii.mean())
    t = np.arange(n)[:, None] - t_x
    b.centers = centers + t * float(rng.uniform(*cfg.border_speed_range)) * _direction(heading) \
        + offset * _direction(heading + np.pi / 2)
    return [a, b]


def draw_motion(cfg: "VideoBenchmarkConfig", rng: np.random.Generator) -> tuple[list[TrackMotion], bool]:
    """All tracks of one video (in draw order) and whether a full occlusion was scheduled."""
    tracks: list[TrackMotion] = []
    if rng.random() < cfg.full_occlusion_rate:
        tracks += occlusion_pair(cfg, rng)
    scheduled = bool(tracks)
    if rng.random() < cfg.lookalike_rate:
        tracks += lookalike_pair(cfg, rng)
    lo, hi = cfg.objects_visible
    for _ in range(int(rng.integers(max(lo - len(tracks), 0), max(hi - len(tracks), 0) + 1))):
        tracks.append(free_track(cfg, rng))
    for _ in range(int(rng.integers(0, cfg.max_border_tracks + 1))):
        tracks.append(border_track(cfg, rng))
    return tracks, scheduled
