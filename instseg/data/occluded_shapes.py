"""OccludedShapes: a generated image benchmark that carries every ground truth the methods need.

Real occlusion benchmarks (COCO-OCC, KINS, COCOA) cannot be downloaded here, so the default run
generates scenes whose visible and amodal masks, depth order and occluders are known exactly.
Each image is drawn from its own random stream seeded by (seed, split, index): the benchmark is
bit-identical on every machine with the pinned libraries, and can be generated in parallel.

Scene model: objects are placed back to front (``depth`` 0 = farthest, larger = closer). With
probability ``overlap_rate`` a new object is placed overlapping an earlier one (an "anchor"),
and with probability ``same_category_overlap_rate`` it then takes the anchor's category. A
placement is rejected (and retried) if it would leave any object with less than
``min_visible_fraction`` of its amodal area or ``min_visible_pixels`` pixels visible, so every
drawn object is annotated and every annotated object is visible.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from instseg.data.appearance import clutter_background, photo_background, render_appearance
from instseg.data.coco_json import mask_to_rle
from instseg.data.shapes import ShapeSpec, render_shape

SPLITS: tuple[str, ...] = ("train", "val", "test")
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    shape: str
    appearance: str
    hue: float
    split: str  # "A" or "B": the documented two-way split used for partial supervision


# Ten categories from six shape families and four appearance families. Each half of the
# A/B split contains ring, star, cross and disc shapes and all four appearances, so both
# shape and appearance commonalities cross the split.
CATEGORIES: tuple[Category, ...] = (
    Category(1, "striped_disc", "disc", "stripes", 0.00, "A"),
    Category(2, "dotted_ring", "ring", "dots", 0.58, "A"),
    Category(3, "checker_crescent", "crescent", "checker", 0.14, "A"),
    Category(4, "gradient_star", "star", "gradient", 0.33, "A"),
    Category(5, "striped_cross", "cross", "stripes", 0.75, "A"),
    Category(6, "dotted_triangle", "triangle", "dots", 0.08, "B"),
    Category(7, "striped_ring", "ring", "stripes", 0.45, "B"),
    Category(8, "checker_star", "star", "checker", 0.88, "B"),
    Category(9, "dotted_cross", "cross", "dots", 0.25, "B"),
    Category(10, "gradient_disc", "disc", "gradient", 0.66, "B"),
)


@dataclass(frozen=True)
class BenchmarkConfig:
    """Everything that decides the generated benchmark; stored beside it in ``meta.json``."""

    image_size: int = 128
    split_sizes: dict[str, int] = field(default_factory=lambda: {"train": 2000, "val": 400, "test": 400})
    objects_per_image: tuple[int, int] = (2, 6)
    radius_range: tuple[float, float] = (0.12, 0.26)  # object radius as a fraction of the image side
    overlap_rate: float = 0.7
    same_category_overlap_rate: float = 0.4
    photo_background_rate: float = 0.3
    min_visible_fraction: float = 0.2
    min_visible_pixels: int = 16
    placement_tries: int = 12
    noise_std: float = 0.015
    coco_occ_threshold: float = 0.2
    seed: int = 0

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> "BenchmarkConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(params) - known
        if unknown:
            raise ValueError(f"unknown benchmark parameters: {sorted(unknown)}")
        cleaned = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
        return cls(**cleaned)


@dataclass
class SceneObject:
    category_id: int
    depth: int
    amodal: np.ndarray  # bool HxW
    visible: np.ndarray  # bool HxW
    occluders: list[int] = field(default_factory=list)  # indices of objects in front that hide part of it


def _stream(cfg: BenchmarkConfig, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, SPLITS.index(split), index, GENERATOR_VERSION])


def _place(cfg: BenchmarkConfig, rng: np.random.Generator, placed: list[tuple[SceneObject, ShapeSpec]]) -> tuple[int, ShapeSpec]:
    size = cfg.image_size
    radius = float(rng.uniform(*cfg.radius_range)) * size
    category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
    if placed and rng.random() < cfg.overlap_rate:
        anchor_obj, anchor = placed[int(rng.integers(len(placed)))]
        if rng.random() < cfg.same_category_overlap_rate:
            category = next(c for c in CATEGORIES if c.id == anchor_obj.category_id)
        direction = rng.uniform(0, 2 * np.pi)
        dist = float(rng.uniform(0.35, 0.95)) * (anchor.radius + radius)
        cx = float(np.clip(anchor.cx + dist * np.cos(direction), 0, size - 1))
        cy = float(np.clip(anchor.cy + dist * np.sin(direction), 0, size - 1))
    else:
        cx, cy = (float(v) for v in rng.uniform(0.1 * size, 0.9 * size, size=2))
    spec = ShapeSpec(category.shape, cx, cy, radius, float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0.75, 1.0)))
    return category.id, spec


def _acceptable(cfg: BenchmarkConfig, objects: list[SceneObject], new_amodal: np.ndarray) -> bool:
    if new_amodal.sum() < max(cfg.min_visible_pixels, 1):
        return False
    for obj in objects:
        remaining = int((obj.visible & ~new_amodal).sum())
        if remaining < cfg.min_visible_pixels or remaining < cfg.min_visible_fraction * obj.amodal.sum():
            return False
    return True


def generate_scene(cfg: BenchmarkConfig, split: str, index: int) -> tuple[np.ndarray, list[SceneObject], str]:
    """One image (HxWx3 uint8), its objects back to front, and the background kind."""
    rng = _stream(cfg, split, index)
    size = cfg.image_size
    use_photo = rng.random() < cfg.photo_background_rate
    image = photo_background(rng, size, size) if use_photo else clutter_background(rng, size, size)
    target = int(rng.integers(cfg.objects_per_image[0], cfg.objects_per_image[1] + 1))
    placed: list[tuple[SceneObject, ShapeSpec]] = []
    for _ in range(target):
        for _ in range(cfg.placement_tries):
            category_id, spec = _place(cfg, rng, placed)
            amodal = render_shape(spec, size, size)
            if _acceptable(cfg, [o for o, _ in placed], amodal):
                break
        else:
            continue
        for obj, _ in placed:
            if (obj.amodal & amodal).any():
                obj.occluders.append(len(placed))
            obj.visible &= ~amodal
        placed.append((SceneObject(category_id, len(placed), amodal, amodal.copy()), spec))
    objects = [o for o, _ in placed]
    by_id = {c.id: c for c in CATEGORIES}
    for obj in objects:
        cat = by_id[obj.category_id]
        texture = render_appearance(cat.appearance, cat.hue, rng, size, size)
        image[obj.amodal] = texture[obj.amodal]
    image = image + rng.normal(0.0, cfg.noise_std, size=image.shape).astype(np.float32)
    pixels = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    return pixels, objects, "photo" if use_photo else "clutter"


def _bbox(rle: dict) -> list[float]:
    encoded = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return [float(v) for v in mask_utils.toBbox(encoded)]


def _annotations(objects: list[SceneObject], image_id: int, first_ann_id: int) -> list[dict]:
    anns = []
    for k, obj in enumerate(objects):
        visible_rle, amodal_rle = mask_to_rle(obj.visible), mask_to_rle(obj.amodal)
        visible_area, amodal_area = int(obj.visible.sum()), int(obj.amodal.sum())
        anns.append({
            "id": first_ann_id + k,
            "image_id": image_id,
            "category_id": obj.category_id,
            "segmentation": visible_rle,
            "area": visible_area,
            "bbox": _bbox(visible_rle),
            "iscrowd": 0,
            "amodal_segmentation": amodal_rle,
            "amodal_area": amodal_area,
            "amodal_bbox": _bbox(amodal_rle),
            "occlusion_ratio": round(1.0 - visible_area / amodal_area, 6),
            "depth": obj.depth,
            "occluder_ids": [first_ann_id + j for j in obj.occluders],
        })
    return anns


def _render_one(args: tuple[BenchmarkConfig, str, int, str]) -> tuple[list[SceneObject], str]:
    cfg, split, index, path = args
    pixels, objects, background = generate_scene(cfg, split, index)
    Image.fromarray(pixels).save(path, format="PNG", compress_level=6)
    return objects, background


def categories_json() -> list[dict]:
    """COCO ``categories`` records, with the shape/appearance families and the A/B split."""
    return [{"id": c.id, "name": c.name, "supercategory": c.shape, "shape": c.shape,
             "appearance": c.appearance, "split": c.split} for c in CATEGORIES]


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, sort_keys=True, separators=(",", ":")))
    tmp.replace(path)


def build_benchmark(cfg: BenchmarkConfig, out_dir: str | Path, workers: int = 1) -> dict[str, Any]:
    """Write images/<split>/*.png and annotations/<split>.json (+ val_occ.json, meta.json)."""
    from instseg.data.occlusion import coco_occ_image_ids

    out = Path(out_dir)
    start = time.perf_counter()
    next_image_id, next_ann_id, n_images = 1, 1, 0
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        for split in SPLITS:
            n = int(cfg.split_sizes.get(split, 0))
            (out / "images" / split).mkdir(parents=True, exist_ok=True)
            jobs = [(cfg, split, i, str(out / "images" / split / f"{i:06d}.png")) for i in range(n)]
            rendered = pool.map(_render_one, jobs, chunksize=16) if pool else map(_render_one, jobs)
            images, annotations = [], []
            for i, (objects, background) in enumerate(rendered):
                image_id = next_image_id + i
                images.append({"id": image_id, "file_name": f"{split}/{i:06d}.png", "height": cfg.image_size,
                               "width": cfg.image_size, "background": background})
                annotations.extend(_annotations(objects, image_id, next_ann_id))
                next_ann_id += len(objects)
            next_image_id += n
            n_images += n
            gt = {"info": {"description": f"OccludedShapes {split}", "version": GENERATOR_VERSION},
                  "images": images, "annotations": annotations, "categories": categories_json()}
            _write_json(out / "annotations" / f"{split}.json", gt)
            if split == "val":
                keep = set(coco_occ_image_ids(gt, threshold=cfg.coco_occ_threshold))
                occ = dict(gt, images=[im for im in images if im["id"] in keep],
                           annotations=[a for a in annotations if a["image_id"] in keep],
                           info={"description": f"OccludedShapes val_occ (box IoU >= {cfg.coco_occ_threshold})",
                                 "version": GENERATOR_VERSION})
                _write_json(out / "annotations" / "val_occ.json", occ)
    finally:
        if pool:
            pool.shutdown()
    _write_json(out / "meta.json", {"generator_version": GENERATOR_VERSION, "config": asdict(cfg)})
    seconds = time.perf_counter() - start
    return {"images": n_images, "seconds": seconds, "images_per_second": n_images / max(seconds, 1e-9)}
