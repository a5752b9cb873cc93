"""OccludedShapes: a generated image benchmark that carries every ground truth the methods need.

Real occlusion benchmarks (COCO-OCC, KINS, COCOA) cannot be downloaded here, so the default run
generates scenes whose visible and amodal masks, depth order and occluders are known exactly.
Each image is drawn from its own random stream seeded by (seed, split, index): the benchmark is
bit-identical on every machine with the pinned libraries, and can be generated in parallel.

Categories are shapes: ten distinct outlines (``instseg.data.shapes``), five per half of the A/B
split, each half holding convex, annular, armed and notched structures. Appearance is not part of
a category: per image, each category present draws a texture and colour from one distribution
shared by all categories, and its instances get small jitters of it (``instseg.data.appearance``).

Scene model: a mixture of two kinds of image. With probability ``crowded_rate`` an image is
*crowded*: with probability ``overlap_rate`` a new object is placed overlapping an earlier one
(an "anchor"), and with probability ``same_category_overlap_rate`` it then takes the anchor's
category. The other images are *sparse*: objects are placed anywhere, but a placement whose
amodal box overlaps an earlier object's with IoU above ``sparse_max_box_iou`` is rejected, so
sparse images hold light, peripheral occlusion at most. Like COCO-OCC within COCO, the crowded
images make a minority of ``val`` that the COCO-OCC rule picks out (``val_occ``). In both kinds,
objects are placed back to front (``depth`` 0 = farthest, larger = closer), and a placement is
rejected (and retried) if it would leave any object with less than ``min_visible_fraction`` of
its amodal area or ``min_visible_pixels`` pixels visible, so every drawn object is annotated and
every annotated object is visible.
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

from instseg.data.appearance import (
    Appearance,
    clutter_background,
    draw_appearance,
    jitter_appearance,
    photo_background,
    render_appearance,
)
from instseg.data.coco_json import mask_to_rle
from instseg.data.shapes import STRUCTURE, ShapeSpec, render_shape

SPLITS: tuple[str, ...] = ("train", "val", "test")
GENERATOR_VERSION = 2
APPEARANCE_MODEL = "drawn per image and category from one category-independent distribution"


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    shape: str
    split: str  # "A" or "B": the documented two-way split used for partial supervision

    @property
    def structure(self) -> str:
        """What the outline shares with other categories (convex, annular, armed, notched)."""
        return STRUCTURE[self.shape]


# Ten categories, one distinct outline each, named by their shape. Each half of the A/B split holds
# convex, annular, notched and armed outlines, so shape knowledge can transfer across the split,
# while every outline tells its category apart.
CATEGORIES: tuple[Category, ...] = (
    Category(1, "disc", "disc", "A"),
    Category(2, "ring", "ring", "A"),
    Category(3, "chevron", "chevron", "A"),
    Category(4, "star", "star", "A"),
    Category(5, "triangle", "triangle", "A"),
    Category(6, "square", "square", "B"),
    Category(7, "c_shape", "c_shape", "B"),
    Category(8, "crescent", "crescent", "B"),
    Category(9, "cross", "cross", "B"),
    Category(10, "four_point_star", "four_point_star", "B"),
)


@dataclass(frozen=True)
class BenchmarkConfig:
    """Everything that decides the generated benchmark; stored beside it in ``meta.json``."""

    image_size: int = 128
    split_sizes: dict[str, int] = field(default_factory=lambda: {"train": 2000, "val": 400, "test": 400})
    objects_per_image: tuple[int, int] = (2, 6)
    radius_range: tuple[float, float] = (0.12, 0.26)  # object radius as a fraction of the image side
    crowded_rate: float = 1.0  # share of crowded images, the rest sparse (module docstring); 1.0: all crowded
    crowded_extra_objects: int = 0  # crowded images draw this many more objects than objects_per_image
    overlap_rate: float = 0.7  # crowded images: chance that an object is placed onto an earlier one
    same_category_overlap_rate: float = 0.4  # ... and then takes that object's category
    sparse_max_box_iou: float = 0.15  # sparse images: the most two objects' amodal boxes may overlap
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
    appearance: Appearance | None = None  # set once the scene is painted


def _stream(cfg: BenchmarkConfig, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, SPLITS.index(split), index, GENERATOR_VERSION])


def _place(cfg: BenchmarkConfig, rng: np.random.Generator, placed: list[tuple[SceneObject, ShapeSpec]],
           crowded: bool) -> tuple[int, ShapeSpec]:
    size = cfg.image_size
    radius = float(rng.uniform(*cfg.radius_range)) * size
    category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
    if crowded and placed and rng.random() < cfg.overlap_rate:
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


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    iw, ih = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _acceptable(cfg: BenchmarkConfig, objects: list[SceneObject], new_amodal: np.ndarray, crowded: bool) -> bool:
    if new_amodal.sum() < max(cfg.min_visible_pixels, 1):
        return False
    if not crowded:
        box = _mask_box(new_amodal)
        if any(_box_iou(box, _mask_box(obj.amodal)) > cfg.sparse_max_box_iou for obj in objects):
            return False
    for obj in objects:
        remaining = int((obj.visible & ~new_amodal).sum())
        if remaining < cfg.min_visible_pixels or remaining < cfg.min_visible_fraction * obj.amodal.sum():
            return False
    return True


def generate_scene(cfg: BenchmarkConfig, split: str, index: int) -> tuple[np.ndarray, list[SceneObject], str]:
    """One image (HxWx3 uint8), its objects back to front, and the background kind."""
    pixels, objects, background, _ = generate_scene_kind(cfg, split, index)
    return pixels, objects, background


def generate_scene_kind(cfg: BenchmarkConfig, split: str, index: int) -> tuple[np.ndarray, list[SceneObject], str, str]:
    """:func:`generate_scene` plus the scene kind ("crowded" or "sparse")."""
    rng = _stream(cfg, split, index)
    size = cfg.image_size
    use_photo = rng.random() < cfg.photo_background_rate
    image = photo_background(rng, size, size) if use_photo else clutter_background(rng, size, size)
    crowded = bool(rng.random() < cfg.crowded_rate)
    extra = cfg.crowded_extra_objects if crowded else 0
    target = int(rng.integers(cfg.objects_per_image[0] + extra, cfg.objects_per_image[1] + extra + 1))
    placed: list[tuple[SceneObject, ShapeSpec]] = []
    for _ in range(target):
        for _ in range(cfg.placement_tries):
            category_id, spec = _place(cfg, rng, placed, crowded)
            amodal = render_shape(spec, size, size)
            if _acceptable(cfg, [o for o, _ in placed], amodal, crowded):
                break
        else:
            continue
        for obj, _ in placed:
            if (obj.amodal & amodal).any():
                obj.occluders.append(len(placed))
            obj.visible &= ~amodal
        placed.append((SceneObject(category_id, len(placed), amodal, amodal.copy()), spec))
    objects = [o for o, _ in placed]
    looks: dict[int, Appearance] = {}  # this image's appearance of each category present
    for obj in objects:
        if obj.category_id not in looks:
            looks[obj.category_id] = draw_appearance(rng)
        obj.appearance = jitter_appearance(looks[obj.category_id], rng)
        texture = render_appearance(obj.appearance, size, size)
        image[obj.amodal] = texture[obj.amodal]
    image = image + rng.normal(0.0, cfg.noise_std, size=image.shape).astype(np.float32)
    pixels = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    return pixels, objects, "photo" if use_photo else "clutter", "crowded" if crowded else "sparse"


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


def _render_one(args: tuple[BenchmarkConfig, str, int, str]) -> tuple[list[SceneObject], str, str]:
    cfg, split, index, path = args
    pixels, objects, background, scene = generate_scene_kind(cfg, split, index)
    Image.fromarray(pixels).save(path, format="PNG", compress_level=6)
    return objects, background, scene


def categories_json() -> list[dict]:
    """COCO ``categories`` records: the shape, its structure (``supercategory``) and the A/B split.
    No appearance: it is drawn per image (``info.appearance_model``)."""
    return [{"id": c.id, "name": c.name, "supercategory": c.structure, "shape": c.shape, "split": c.split}
            for c in CATEGORIES]


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
            for i, (objects, background, scene) in enumerate(rendered):
                image_id = next_image_id + i
                images.append({"id": image_id, "file_name": f"{split}/{i:06d}.png", "height": cfg.image_size,
                               "width": cfg.image_size, "background": background, "scene": scene})
                annotations.extend(_annotations(objects, image_id, next_ann_id))
                next_ann_id += len(objects)
            next_image_id += n
            n_images += n
            gt = {"info": {"description": f"OccludedShapes {split}", "version": GENERATOR_VERSION,
                           "appearance_model": APPEARANCE_MODEL},
                  "images": images, "annotations": annotations, "categories": categories_json()}
            _write_json(out / "annotations" / f"{split}.json", gt)
            if split == "val":
                keep = set(coco_occ_image_ids(gt, threshold=cfg.coco_occ_threshold))
                occ = dict(gt, images=[im for im in images if im["id"] in keep],
                           annotations=[a for a in annotations if a["image_id"] in keep],
                           info={"description": f"OccludedShapes val_occ (box IoU >= {cfg.coco_occ_threshold})",
                                 "version": GENERATOR_VERSION, "appearance_model": APPEARANCE_MODEL})
                _write_json(out / "annotations" / "val_occ.json", occ)
    finally:
        if pool:
            pool.shutdown()
    _write_json(out / "meta.json", {"generator_version": GENERATOR_VERSION, "config": asdict(cfg)})
    seconds = time.perf_counter() - start
    return {"images": n_images, "seconds": seconds, "images_per_second": n_images / max(seconds, 1e-9)}
