"""Building a VOI split from OccludedShapes-VIS: eligible targets, a deterministic sample plan, samples
written as npz plus an index JSON.

The plan depends only on the scenes, the config, the split and the seed (its own random stream;
each sample gets a seed of its own), so a sample is rebuilt bit for bit from its index entry, and
which samples fail placement does not shift the others. Object-shaped occluders and occluder
looks come from *other* videos of the same split, as YouTube-VOI takes occluders from other videos.
"""

from __future__ import annotations

import os
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from instseg.data.appearance import Appearance, draw_appearance
from instseg.data.coco_json import read_json
from instseg.errors import InputError
from instseg.video.data.occluded_shapes_vis.build import load_scenes
from instseg.video.data.occluded_shapes_vis.render import track
from instseg.video.voin.data.config import VoiConfig
from instseg.video.voin.data.occluders import Occluder, bezier_outline
from instseg.video.voin.data.placement import PlacementError
from instseg.video.voin.data.samples import VoiSample, clip_masks, natural_sample, synthetic_sample
from instseg.video.voin.data.store import pasted_region, write_index, write_sample

PLAN_STREAM = 0x564F49  # "VOI": keeps the plan's stream apart from the generator's


@dataclass(frozen=True)
class SampleSpec:
    """One planned sample; ``outline_source`` / ``look_source`` are (video_id, track_id) or None (a
    Bezier outline / a random look)."""

    video_id: int
    track_id: int
    start: int
    kind: str  # "synthetic" or "natural"
    occluder_kind: str | None = None  # synthetic: "object" or "blob"
    outline_source: tuple[int, int] | None = None
    look_source: tuple[int, int] | None = None
    seed: int = 0

    @property
    def name(self) -> str:
        return f"{self.video_id:05d}_t{self.track_id:02d}_f{self.start:03d}_{self.kind}"


def clip_starts(length: int, cfg: VoiConfig) -> list[int]:
    return list(range(0, length - cfg.clip_length + 1, cfg.clip_stride))


def eligible_clips(scene: dict[str, Any], cfg: VoiConfig, masks: list[dict] | None = None) -> dict[str, list]:
    """``{"synthetic": [(track_id, start), ...], "natural": [...]}``. Synthetic: the target has at
    least ``min_area`` pixels in every clip frame and nothing in the scene hides any of it (so the
    source frames are its clean ground truth). Natural: ``min_area`` every frame, at least
    ``natural_min_frames`` frames ``natural_min_occluded`` hidden, some of it visible in at least
    ``natural_min_visible_frames``."""
    masks = masks if masks is not None else clip_masks(scene, 0, scene["length"])
    out: dict[str, list] = {"synthetic": [], "natural": []}
    for obj in scene["objects"]:
        tid = obj["track_id"]
        amodal = np.array([m[tid]["amodal"].sum() for m in masks])
        visible = np.array([m[tid]["visible"].sum() for m in masks])
        for start in clip_starts(scene["length"], cfg):
            a, v = amodal[start:start + cfg.clip_length], visible[start:start + cfg.clip_length]
            if (a < cfg.min_area).any():
                continue
            if (v == a).all():
                out["synthetic"].append((tid, start))
            hidden = 1.0 - v / a
            if (hidden >= cfg.natural_min_occluded).sum() >= cfg.natural_min_frames \
                    and (v > 0).sum() >= cfg.natural_min_visible_frames:
                out["natural"].append((tid, start))
    return out


def plan_samples(scenes: dict[int, dict], cfg: VoiConfig, split: str, seed: int,
                 eligible: dict[int, dict[str, list]] | None = None) -> list[SampleSpec]:
    """The split's samples: per video (in id order) up to ``synthetic_per_video`` synthetic and
    ``natural_per_video`` natural clips drawn without replacement from the eligible ones."""
    rng = np.random.default_rng([seed, zlib.crc32(split.encode()), PLAN_STREAM])
    specs: list[SampleSpec] = []
    for vid in sorted(scenes):
        scene = scenes[vid]
        cand = eligible[vid] if eligible is not None else eligible_clips(scene, cfg)
        others = [(v, o["track_id"]) for v in sorted(scenes) if v != vid for o in scenes[v]["objects"]]
        for kind, count in (("synthetic", cfg.synthetic_per_video), ("natural", cfg.natural_per_video)):
            pool = cand[kind]
            picks = rng.choice(len(pool), size=min(count, len(pool)), replace=False) if pool else []
            for p in sorted(int(i) for i in picks):
                tid, start = pool[p]
                if kind == "natural":
                    specs.append(SampleSpec(vid, tid, start, kind, seed=int(rng.integers(2**62))))
                    continue
                obj_kind = "object" if others and rng.random() < cfg.object_occluder_rate else "blob"
                outline = others[int(rng.integers(len(others)))] if obj_kind == "object" else None
                look = others[int(rng.integers(len(others)))] if others and rng.random() < cfg.source_look_rate \
                    else None
                specs.append(SampleSpec(vid, tid, start, kind, obj_kind, outline, look, int(rng.integers(2**62))))
    return specs


def occluder_template(spec: SampleSpec, scenes: dict[int, dict], cfg: VoiConfig,
                      rng: np.random.Generator) -> Occluder:
    """The occluder of a synthetic spec before placement: outline and look, poses still empty."""
    if spec.look_source is not None:
        look = Appearance(**track(scenes[spec.look_source[0]], spec.look_source[1])["look"])
    else:
        look = draw_appearance(rng)
    source = {"outline": spec.outline_source, "look": spec.look_source}
    if spec.occluder_kind == "object":
        src = track(scenes[spec.outline_source[0]], spec.outline_source[1])
        return Occluder("object", look, np.empty((0, 7)), shape=src["shape"], aspect=float(src["aspect"]),
                        source=source)
    return Occluder("blob", look, np.empty((0, 7)), aspect=float(rng.uniform(0.7, 1.0)),
                    outline=bezier_outline(rng, cfg.blob_points), source=source)


def make_sample(spec: SampleSpec, scenes: dict[int, dict], cfg: VoiConfig,
                masks: list[dict] | None = None) -> VoiSample:
    """The sample of one spec (``masks``: the video's per-frame masks, if already computed);
    raises :class:`PlacementError` when its occluder cannot be placed."""
    scene = scenes[spec.video_id]
    clip = masks[spec.start:spec.start + cfg.clip_length] if masks is not None else None
    if spec.kind == "natural":
        sample = natural_sample(scene, spec.track_id, spec.start, cfg, clip)
    else:
        rng = np.random.default_rng(spec.seed)
        template = occluder_template(spec, scenes, cfg, rng)
        sample = synthetic_sample(scene, spec.track_id, spec.start, cfg, template, rng, clip, spec.video_id)
    sample.meta.update(video_id=spec.video_id, spec=asdict(spec))
    return sample


def frame_files(annotation_path: str | Path) -> dict[int, list[str]]:
    """``{video_id: file_names}`` of an annotation file (relative to the benchmark's frames/)."""
    data = read_json(Path(annotation_path))
    return {v["id"]: list(v.get("file_names", [])) for v in data["videos"]}


def check_frames(root: Path, files: list[str], sample: VoiSample, pasted: np.ndarray, record: str) -> None:
    """The referenced benchmark frames equal the sample's frames outside the pasted region (a
    regenerated or different benchmark would silently break a reference otherwise)."""
    for k, name in enumerate(files):
        try:
            with Image.open(root / name) as im:
                frame = np.asarray(im.convert("RGB"))
        except OSError as exc:
            raise InputError(f"benchmark frame unreadable ({exc})", root / name, record) from exc
        if frame.shape != sample.corrupted[k].shape or \
                not np.array_equal(frame[~pasted[k]], sample.corrupted[k][~pasted[k]]):
            raise InputError("benchmark frame differs from the frame rendered from its scene", root / name, record)


def build_voi_split(annotation_path: str | Path, out_dir: str | Path, split: str, cfg: VoiConfig = VoiConfig(),
                    seed: int = 0, max_videos: int | None = None, embed_frames: bool = False) -> dict[str, Any]:
    """Write ``out_dir/<split>/*.npz`` and ``out_dir/<split>/index.json`` from the scenes of one
    OccludedShapes-VIS annotation file (frames under ``<annotations>/../frames``, referenced unless
    ``embed_frames``); samples of an earlier build that this plan no longer holds are removed, so the
    folder is what the index lists. Returns timing and size statistics (also in the index)."""
    cfg.check()
    annotation_path = Path(annotation_path)
    scenes = load_scenes(annotation_path)
    files = frame_files(annotation_path)
    if max_videos is not None:
        scenes = {v: scenes[v] for v in sorted(scenes)[:max_videos]}
    root = annotation_path.resolve().parent.parent / "frames"
    folder = Path(out_dir) / split
    start_time = time.perf_counter()
    masks = {v: clip_masks(s, 0, s["length"]) for v, s in scenes.items()}
    eligible = {v: eligible_clips(s, cfg, masks[v]) for v, s in scenes.items()}
    specs = plan_samples(scenes, cfg, split, seed, eligible)
    plan_seconds = time.perf_counter() - start_time
    entries, skipped, per_video = [], [], {}
    for spec in specs:
        t0 = time.perf_counter()
        try:
            sample = make_sample(spec, scenes, cfg, masks[spec.video_id])
        except PlacementError as exc:
            skipped.append(dict(asdict(spec), reason=str(exc)))
            per_video[spec.video_id] = per_video.get(spec.video_id, 0.0) + time.perf_counter() - t0
            continue
        sample.meta["frame_files"] = files[spec.video_id][spec.start:spec.start + cfg.clip_length]
        if not embed_frames:
            masks_k = {"occluder": sample.occluder, "occluded": sample.occluded}
            check_frames(root, sample.meta["frame_files"], sample, pasted_region(spec.kind, masks_k), spec.name)
        size = write_sample(folder / f"{spec.name}.npz", sample, embed_frames)
        frac = [f for f in sample.meta["occluded_fraction"] if f == f]
        entries.append({"file": f"{spec.name}.npz", "video_id": spec.video_id, "track_id": spec.track_id,
                        "start": spec.start, "length": cfg.clip_length, "kind": spec.kind,
                        "occluder_kind": spec.occluder_kind or "natural", "bytes": size,
                        "mean_occluded_fraction": round(float(np.mean(frac)), 4) if frac else None})
        per_video[spec.video_id] = per_video.get(spec.video_id, 0.0) + time.perf_counter() - t0
    seconds = time.perf_counter() - start_time
    sizes = [e["bytes"] for e in entries]
    stats = {"videos": len(scenes), "samples": len(entries), "skipped": len(skipped),
             "synthetic": sum(e["kind"] == "synthetic" for e in entries),
             "natural": sum(e["kind"] == "natural" for e in entries),
             "seconds": round(seconds, 3), "plan_seconds": round(plan_seconds, 3),
             "seconds_per_video": round(seconds / max(len(scenes), 1), 4),
             "max_seconds_per_video": round(max(per_video.values(), default=0.0), 4),
             "bytes_per_sample": round(float(np.mean(sizes)), 1) if sizes else 0.0, "bytes": int(sum(sizes)),
             "embedded_frames": embed_frames}
    index = {"split": split, "seed": seed, "config": asdict(cfg), "source": annotation_path.name,
             "frames_root": None if embed_frames else os.path.relpath(root, folder.resolve()),
             "samples": entries, "skipped": skipped, "stats": stats}
    write_index(folder / "index.json", index)
    listed = {e["file"] for e in entries}
    for stale in folder.glob("?????_t??_f???_*.npz"):  # samples of an earlier build that this one dropped
        if stale.name not in listed:
            stale.unlink()
    return stats
