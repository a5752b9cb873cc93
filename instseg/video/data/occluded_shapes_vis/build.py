"""OccludedShapes-VIS: build the video benchmark (frames, YouTube-VIS JSON, KITTI-MOTS txt) and
summarise it.

Each video comes from its own random stream seeded by (seed, split, index, version, a video
constant), so videos build in parallel and bit-identically. A drawn scene is kept only if every
frame shows ``objects_visible`` objects, every track is visible somewhere, and a scheduled full
occlusion really happens on the rendered masks (hidden for ``full_occlusion_frames[0]`` frames or
more, visible just before and after); otherwise it is redrawn from the same stream. The exact scene
parameters are stored per video (``videos[i]["scene"]``): ``render``/``flow`` recompute frames, masks,
clean layers and flow from them, so nothing large but the frames is written.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from instseg.data.appearance import draw_appearance, jitter_appearance
from instseg.data.coco_json import mask_to_rle, read_json
from instseg.data.occluded_shapes import SPLITS, _bbox, _write_json, categories_json
from instseg.errors import InputError
from instseg.video.data.kitti_mots import write_kitti_mots
from instseg.video.data.occluded_shapes_vis.motion import TrackMotion, draw_motion, oscillation
from instseg.video.data.occluded_shapes_vis.render import frame_masks, render_frame

GENERATOR_VERSION = 2  # 2: scheduled occlusions are seen before and after (full_occlusion_lead)
VIDEO_STREAM = 0x56495300  # "VIS\0": keeps video streams apart from the image benchmark's
APPEARANCE_MODEL = "drawn per video and category from one category-independent distribution; instances jittered"
SCENE_KEYS = ("height", "width", "length", "background", "camera", "noise", "objects")
OBJECT_KEYS = ("track_id", "category_id", "shape", "aspect", "look", "frames")

SMOKE: dict[str, Any] = {"image_size": 64, "frames_per_video": 8, "split_sizes": {"train": 2, "val": 2, "test": 2},
                         "radius_range": [0.14, 0.28], "full_occlusion_frames": [2, 3],
                         "full_occlusion_lead": 1}


@dataclass(frozen=True)
class VideoBenchmarkConfig:
    """Everything that decides the generated videos; stored beside them in ``meta.json``. Defaults: the cpu scale."""

    image_size: int = 128
    frames_per_video: int = 32
    split_sizes: dict[str, int] = field(default_factory=lambda: {"train": 60, "val": 24, "test": 24})
    objects_visible: tuple[int, int] = (2, 6)  # objects in the frame, every frame
    radius_range: tuple[float, float] = (0.12, 0.26)  # fraction of the frame side, as in the image benchmark
    speed_range: tuple[float, float] = (0.3, 2.0)  # px/frame, free tracks
    border_speed_range: tuple[float, float] = (1.5, 3.0)  # px/frame, tracks crossing an edge; look-alike crossings
    accel_std: float = 0.08  # px/frame^2, the AR(1) acceleration's innovation
    max_rotation_speed: float = 0.08  # rad/frame
    scale_amplitude: float = 0.15  # log-radius oscillation
    max_border_tracks: int = 2
    full_occlusion_rate: float = 0.8  # share of videos with a scheduled full occlusion
    full_occlusion_frames: tuple[int, int] = (3, 8)  # its length; the lower bound is verified
    full_occlusion_lead: int = 3  # frames it is less than half covered before and after (verified)
    lookalike_rate: float = 0.5  # share of videos with a same-category crossing
    pan_rate: float = 0.5
    max_pan_speed: int = 1  # px/frame, integer so the background flow is exact
    gain_drift: float = 0.08  # illumination gain amplitude
    texture_drift: float = 0.15  # px/frame, most texture phase speed
    photo_background_rate: float = 0.3
    noise_std: float = 0.015
    scene_tries: int = 40
    seed: int = 0

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> "VideoBenchmarkConfig":
        unknown = set(params) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown video benchmark parameters: {sorted(unknown)}", record="video benchmark")
        cfg = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})
        if cfg.frames_per_video < 2 or cfg.scene_tries < 1:
            raise InputError("frames_per_video must be >= 2 and scene_tries >= 1", record="video benchmark")
        if not 1 <= cfg.objects_visible[0] <= cfg.objects_visible[1]:
            raise InputError(f"objects_visible must be a range (lo, hi) with 1 <= lo <= hi, got {cfg.objects_visible}",
                             record="video benchmark")
        return cfg


def _stream(cfg: VideoBenchmarkConfig, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, SPLITS.index(split), index, GENERATOR_VERSION, VIDEO_STREAM])


def _camera(cfg: VideoBenchmarkConfig, rng: np.random.Generator) -> tuple[list[list[int]], int, int]:
    """Per-frame crop offsets of an integer pan, and the background canvas size they need."""
    n, size, m = cfg.frames_per_video, cfg.image_size, cfg.max_pan_speed
    vx = vy = 0
    if m > 0 and rng.random() < cfg.pan_rate:
        speeds = [(x, y) for x in range(-m, m + 1) for y in range(-m, m + 1) if (x, y) != (0, 0)]
        vx, vy = speeds[int(rng.integers(len(speeds)))]
    x0, y0 = max(0, -vx) * (n - 1), max(0, -vy) * (n - 1)
    camera = [[x0 + vx * t, y0 + vy * t] for t in range(n)]
    return camera, size + abs(vy) * (n - 1), size + abs(vx) * (n - 1)


def _objects(cfg: VideoBenchmarkConfig, rng: np.random.Generator, tracks: list[TrackMotion]) -> list[dict]:
    """Scene objects: looks drawn per category and jittered per instance, as in the image benchmark,
    plus the slow drifts; values rounded so the JSON holds exactly what was rendered."""
    n = cfg.frames_per_video
    looks: dict[int, Any] = {}
    objects = []
    for k, tr in enumerate(tracks):
        if tr.category.id not in looks:
            looks[tr.category.id] = draw_appearance(rng)
        look = jitter_appearance(looks[tr.category.id], rng)
        gains = 1.0 + oscillation(rng, n, cfg.gain_drift, (1.0 * n, 3.0 * n))
        phases = float(rng.uniform(-cfg.texture_drift, cfg.texture_drift)) * np.arange(n)
        frames = [[round(float(tr.centers[t, 0]), 4), round(float(tr.centers[t, 1]), 4), round(float(tr.angles[t]), 4),
                   round(float(tr.radii[t]), 4), round(float(tr.depths[t]), 4), round(float(gains[t]), 5),
                   round(float(phases[t]), 4)] for t in range(n)]
        objects.append({"track_id": k + 1, "category_id": tr.category.id, "shape": tr.category.shape,
                        "aspect": round(tr.aspect, 4), "role": tr.role, "look": asdict(look), "frames": frames})
    return objects


def track_states(masks: list[dict[int, dict[str, np.ndarray]]], track_id: int) -> list[str]:
    """Per frame: "out" (no amodal pixel in the frame), "hidden" (in the frame, nothing visible) or "visible"."""
    return ["out" if not m[track_id]["amodal"].any() else "visible" if m[track_id]["visible"].any() else "hidden"
            for m in masks]


def hidden_runs(states: list[str], k: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each run of >= k "hidden" frames with the track visible just before and
    just after: it disappears behind something in the frame and reappears."""
    runs, t = [], 0
    while t < len(states):
        if states[t] != "hidden":
            t += 1
            continue
        end = t
        while end < len(states) and states[end] == "hidden":
            end += 1
        if end - t >= k and t > 0 and states[t - 1] == "visible" and end < len(states) and states[end] == "visible":
            runs.append((t, end))
        t = end
    return runs


def full_occlusion_events(states: list[str], k: int) -> int:
    """How many runs :func:`hidden_runs` finds."""
    return len(hidden_runs(states, k))


def seen_occlusion_events(masks: list[dict[int, dict[str, np.ndarray]]], track_id: int, k: int, lead: int) -> int:
    """Full occlusions of >= k frames around which the object is less than half covered in >= lead
    frames before and >= lead frames after: ones a tracker has a chance to recover from."""
    clear = [bool(m[track_id]["amodal"].any()) and 2 * int(m[track_id]["visible"].sum()) > int(m[track_id]["amodal"].sum())
             for m in masks]
    return sum(sum(clear[:start]) >= lead and sum(clear[end:]) >= lead
               for start, end in hidden_runs(track_states(masks, track_id), k))


def _acceptable(cfg: VideoBenchmarkConfig, scene: dict, masks: list[dict], scheduled: bool) -> bool:
    lo, hi = cfg.objects_visible
    if not all(lo <= sum(m[i]["amodal"].any() for i in m) <= hi for m in masks):
        return False
    states = {o["track_id"]: track_states(masks, o["track_id"]) for o in scene["objects"]}
    if not all("visible" in s for s in states.values()):
        return False
    return not scheduled or any(seen_occlusion_events(masks, o["track_id"], cfg.full_occlusion_frames[0],
                                                      cfg.full_occlusion_lead) for o in scene["objects"])


def generate_video(cfg: VideoBenchmarkConfig, split: str, index: int) -> tuple[dict, list[dict]]:
    """One video's scene and its per-frame masks (:func:`render.frame_masks`). After ``scene_tries``
    rejected draws the last one is kept (its events are counted as they are)."""
    rng = _stream(cfg, split, index)
    size = cfg.image_size
    kind = "photo" if rng.random() < cfg.photo_background_rate else "clutter"
    camera, canvas_h, canvas_w = _camera(cfg, rng)
    base = {"height": size, "width": size, "length": cfg.frames_per_video, "camera": camera,
            "background": {"kind": kind, "seed": int(rng.integers(2**62)), "height": canvas_h, "width": canvas_w},
            "noise": {"std": cfg.noise_std, "seed": int(rng.integers(2**62))}}
    for _ in range(cfg.scene_tries):
        tracks, scheduled = draw_motion(cfg, rng)
        scene = dict(base, objects=_objects(cfg, rng, tracks))
        masks = [frame_masks(scene, t) for t in range(cfg.frames_per_video)]
        if _acceptable(cfg, scene, masks, scheduled):
            break
    return scene, masks


def occlusion_level(ratio: float) -> str:
    """OVIS-style occlusion level of one object in one frame."""
    return "none" if ratio < 0.01 else "slight" if ratio < 0.5 else "severe"


def _track_annotation(scene: dict, masks: list[dict], obj: dict) -> dict:
    """Per-frame lists of one track (YouTube-VIS 2019 plus amodal extras), ids left to the caller."""
    keys = ("segmentations", "bboxes", "areas", "amodal_segmentations", "amodal_bboxes", "amodal_areas",
            "occlusion_ratios", "occlusion", "depths")
    ann: dict[str, Any] = {k: [] for k in keys}
    for t, m in enumerate(masks):
        vis, amo = m[obj["track_id"]]["visible"], m[obj["track_id"]]["amodal"]
        if not amo.any():
            for k in keys:
                ann[k].append(None)
            continue
        amodal_rle, amodal_area, visible_area = mask_to_rle(amo), int(amo.sum()), int(vis.sum())
        visible_rle = mask_to_rle(vis) if visible_area else None
        ratio = round(1.0 - visible_area / amodal_area, 6)
        for k, v in zip(keys, (visible_rle, _bbox(visible_rle) if visible_rle else None, visible_area or None,
                               amodal_rle, _bbox(amodal_rle), amodal_area, ratio, occlusion_level(ratio),
                               obj["frames"][t][4])):
            ann[k].append(v)
    return dict(ann, category_id=obj["category_id"], track_id=obj["track_id"], iscrowd=0, height=scene["height"],
                width=scene["width"], length=scene["length"])


def _build_one(args: tuple[VideoBenchmarkConfig, str, int, str]) -> tuple[dict, list[dict], int]:
    cfg, split, index, out = args
    name = f"{index:04d}"
    scene, masks = generate_video(cfg, split, index)
    frame_dir = Path(out) / "frames" / split / name
    frame_dir.mkdir(parents=True, exist_ok=True)
    for t in range(scene["length"]):
        Image.fromarray(render_frame(scene, t)).save(frame_dir / f"{t:05d}.png", format="PNG", compress_level=6)
    anns = [_track_annotation(scene, masks, obj) for obj in scene["objects"]]
    rows = [(t, a["category_id"] * 1000 + a["track_id"], a["category_id"], seg)
            for a in anns for t, seg in enumerate(a["segmentations"]) if seg is not None]
    write_kitti_mots(Path(out) / "mots" / split / f"{name}.txt", rows)
    k = cfg.full_occlusion_frames[0]
    events = sum(full_occlusion_events(track_states(masks, o["track_id"]), k) for o in scene["objects"])
    return scene, anns, events


def build_video_benchmark(cfg: VideoBenchmarkConfig, out_dir: str | Path, workers: int = 1) -> dict[str, Any]:
    """Write frames/, annotations/<split>.json, mots/ and meta.json under ``out_dir``."""
    out = Path(out_dir)
    start = time.perf_counter()
    next_video_id, next_ann_id, n_videos, n_frames, n_events = 1, 1, 0, 0, 0
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        for split in SPLITS:
            n = int(cfg.split_sizes.get(split, 0))
            jobs = [(cfg, split, i, str(out)) for i in range(n)]
            built = pool.map(_build_one, jobs, chunksize=2) if pool else map(_build_one, jobs)
            videos, annotations = [], []
            for i, (scene, anns, events) in enumerate(built):
                video_id, name = next_video_id + i, f"{i:04d}"
                videos.append({"id": video_id, "name": name, "width": scene["width"], "height": scene["height"],
                               "length": scene["length"], "scene": scene,
                               "file_names": [f"{split}/{name}/{t:05d}.png" for t in range(scene["length"])]})
                for ann in anns:
                    annotations.append(dict(ann, id=next_ann_id, video_id=video_id))
                    next_ann_id += 1
                n_frames += scene["length"]
                n_events += events
            next_video_id += n
            n_videos += n
            gt = {"info": {"description": f"OccludedShapes-VIS {split}", "version": GENERATOR_VERSION,
                           "appearance_model": APPEARANCE_MODEL},
                  "videos": videos, "annotations": annotations, "categories": categories_json()}
            _write_json(out / "annotations" / f"{split}.json", gt)
    finally:
        if pool:
            pool.shutdown()
    _write_json(out / "meta.json", {"generator_version": GENERATOR_VERSION, "config": asdict(cfg)})
    seconds = time.perf_counter() - start
    return {"videos": n_videos, "frames": n_frames, "seconds": seconds,
            "frames_per_second": n_frames / max(seconds, 1e-9), "full_occlusion_events": n_events}


def load_scenes(path: str | Path) -> dict[int, dict]:
    """``{video_id: scene}`` of an annotation file, checked enough that rendering cannot fail on a missing key."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list):
        raise InputError("expected a JSON object with a 'videos' list", path)
    scenes = {}
    for i, video in enumerate(data["videos"]):
        record = f"videos[{i}] (id {video.get('id') if isinstance(video, dict) else '?'})"
        scene = video.get("scene") if isinstance(video, dict) else None
        if not isinstance(scene, dict) or "id" not in video:
            raise InputError("video needs an 'id' and a 'scene' object", path, record)
        missing = [k for k in SCENE_KEYS if k not in scene]
        if missing:
            raise InputError(f"scene lacks {missing}", path, record)
        if len(scene["camera"]) != scene["length"]:
            raise InputError(f"camera has {len(scene['camera'])} offsets for {scene['length']} frames", path, record)
        for j, obj in enumerate(scene["objects"]):
            if not isinstance(obj, dict):
                raise InputError(f"scene object {j} is not an object", path, record)
            lacking = [k for k in OBJECT_KEYS if k not in obj]
            if lacking or len(obj["frames"]) != scene["length"]:
                problem = (f"lacks {lacking}" if lacking
                           else f"has {len(obj['frames'])} poses for {scene['length']} frames")
                raise InputError(f"scene object {j} {problem}", path, record)
        scenes[video["id"]] = scene
    return scenes


def _box_occlusion_rate(boxes: list[list[float]], height: int, width: int) -> float | None:
    """OVIS BOR of one frame: area covered by >= 2 boxes over the area of their union (None: no box)."""
    if not boxes:
        return None
    count = np.zeros((height, width), dtype=np.int32)
    for x, y, w, h in boxes:
        count[int(round(y)):int(round(y + h)), int(round(x)):int(round(x + w))] += 1
    union = int((count >= 1).sum())
    return float((count >= 2).sum()) / union if union else None


def video_statistics(gt: dict, k: int = 3) -> dict[str, Any]:
    """Summary of a YouTube-VIS split of this benchmark (the notebook's table): sizes, occlusion level
    shares over object-frames, full-occlusion events (hidden >= ``k`` frames, then visible again),
    MBOR (mean over frames of the box occlusion rate, OVIS), enter/leave events and depth-order swaps."""
    by_video: dict[int, list[dict]] = {v["id"]: [] for v in gt["videos"]}
    for i, ann in enumerate(gt["annotations"]):
        if ann.get("video_id") not in by_video:
            raise InputError(f"video_id {ann.get('video_id')!r} is not among the videos", record=f"annotations[{i}]")
        by_video[ann["video_id"]].append(ann)
    levels = {"none": 0, "slight": 0, "severe": 0}
    in_frame, visible, bors, events, entering, leaving, swaps = [], [], [], 0, 0, 0, 0
    for video in gt["videos"]:
        anns = by_video[video["id"]]
        for t in range(video["length"]):
            present = [a for a in anns if a["amodal_segmentations"][t] is not None]
            in_frame.append(len(present))
            visible.append(sum(a["segmentations"][t] is not None for a in present))
            for a in present:
                levels[a["occlusion"][t]] += 1
            bor = _box_occlusion_rate([a["bboxes"][t] for a in present if a["bboxes"][t] is not None],
                                      video["height"], video["width"])
            if bor is not None:
                bors.append(bor)
        for a in anns:
            states = ["out" if a["amodal_segmentations"][t] is None else
                      "visible" if a["segmentations"][t] is not None else "hidden" for t in range(video["length"])]
            events += full_occlusion_events(states, k)
            entering += sum(s == "out" and n != "out" for s, n in zip(states, states[1:]))
            leaving += sum(s != "out" and n == "out" for s, n in zip(states, states[1:]))
        swaps += _depth_swaps(anns, video["length"])
    total = max(sum(levels.values()), 1)
    return {"videos": len(gt["videos"]), "frames": len(in_frame),
            "tracks_per_video": len(gt["annotations"]) / max(len(gt["videos"]), 1),
            "objects_per_frame": float(np.mean(in_frame)) if in_frame else 0.0,
            "visible_objects_per_frame": float(np.mean(visible)) if visible else 0.0,
            "occlusion_shares": {lv: n / total for lv, n in levels.items()},
            "full_occlusion_events": events, "full_occlusion_k": k,
            "mbor": float(np.mean(bors)) if bors else 0.0,
            "entering_events": entering, "leaving_events": leaving, "depth_order_swaps": swaps}


def _depth_swaps(anns: list[dict], length: int) -> int:
    """Pairs of in-frame tracks whose depth order flips from one frame to the next."""
    swaps = 0
    for i, a in enumerate(anns):
        for b in anns[i + 1:]:
            for t in range(length - 1):
                da, db = (a["depths"][t], a["depths"][t + 1]), (b["depths"][t], b["depths"][t + 1])
                if None not in da + db and (da[0] - db[0]) * (da[1] - db[1]) < 0:
                    swaps += 1
    return swaps
