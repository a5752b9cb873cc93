"""Read and check COCO-format JSON (ground truth and results) before anything trusts it.

Every problem is raised as :class:`instseg.errors.InputError` naming the file and the record,
so a user with a broken export learns which annotation to fix instead of reading a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils

from instseg.errors import InputError

MASK_KEYS = ("segmentation", "amodal_segmentation")


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; unreadable or malformed files become an InputError with the position."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read file ({exc.__class__.__name__}: {exc})", path) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", path) from None


def check_segmentation(seg: Any, path: Path, record: str, key: str) -> None:
    if isinstance(seg, list):
        if len(seg) == 0:
            raise InputError(f"'{key}' is an empty polygon list", path, record)
        for k, poly in enumerate(seg):
            if not isinstance(poly, list) or not all(isinstance(v, (int, float)) for v in poly):
                raise InputError(f"'{key}' polygon {k} is not a list of numbers", path, record)
            if len(poly) % 2 or len(poly) < 6:
                raise InputError(
                    f"'{key}' polygon {k} has {len(poly) / 2:g} points; a polygon needs at least 3 (x, y) points",
                    path, record)
    elif isinstance(seg, dict):
        if "counts" not in seg or "size" not in seg:
            raise InputError(f"'{key}' RLE needs 'counts' and 'size'", path, record)
        size = seg["size"]
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v >= 0 for v in size)):
            raise InputError(f"'{key}' RLE 'size' must be [height, width]", path, record)
    else:
        raise InputError(f"'{key}' must be a polygon list or an RLE dict, got {type(seg).__name__}", path, record)


def check_bbox(bbox: Any, path: Path, record: str, key: str = "bbox") -> None:
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
        raise InputError(f"'{key}' must be [x, y, width, height]", path, record)
    if not all(np.isfinite(bbox)):
        raise InputError(f"'{key}' has a non-finite value {list(bbox)}", path, record)
    if bbox[2] <= 0 or bbox[3] <= 0:
        raise InputError(f"zero-area box: '{key}' = {list(bbox)} has width or height <= 0", path, record)


def validate_coco_gt(data: Any, path: str | Path = "<memory>") -> dict:
    """Check a COCO ground-truth dict; return it unchanged when it is sound."""
    path = Path(path)
    if not isinstance(data, dict):
        raise InputError("a COCO ground-truth file must hold a JSON object", path)
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise InputError(f"missing top-level key '{key}'", path)
        if not isinstance(data[key], list):
            raise InputError(f"top-level key '{key}' must be a list", path)
    image_ids: dict[Any, dict] = {}
    for i, img in enumerate(data["images"]):
        record = f"images[{i}]"
        if not isinstance(img, dict) or "id" not in img:
            raise InputError("image record needs an 'id'", path, record)
        record = f"images[{i}] (id={img['id']})"
        for key in ("height", "width"):
            if not isinstance(img.get(key), int) or img[key] <= 0:
                raise InputError(f"image '{key}' must be a positive integer", path, record)
        if img["id"] in image_ids:
            raise InputError("duplicate image id", path, record)
        image_ids[img["id"]] = img
    category_ids = set()
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat:
            raise InputError("category record needs an 'id'", path, f"categories[{i}]")
        category_ids.add(cat["id"])
    ann_ids = set()
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise InputError("annotation must be an object", path, f"annotations[{i}]")
        record = f"annotations[{i}] (id={ann.get('id')}, image_id={ann.get('image_id')})"
        if "id" in ann:
            if ann["id"] in ann_ids:
                raise InputError("duplicate annotation id", path, record)
            ann_ids.add(ann["id"])
        if ann.get("image_id") not in image_ids:
            raise InputError("annotation references an unknown image_id", path, record)
        if ann.get("category_id") not in category_ids:
            raise InputError(f"annotation references an unknown category_id {ann.get('category_id')!r}", path, record)
        if "bbox" in ann:
            check_bbox(ann["bbox"], path, record)
        if "amodal_bbox" in ann:
            check_bbox(ann["amodal_bbox"], path, record, "amodal_bbox")
        for key in MASK_KEYS:
            if key in ann:
                check_segmentation(ann[key], path, record, key)
        if "bbox" not in ann and "segmentation" not in ann:
            raise InputError("annotation has neither 'bbox' nor 'segmentation'", path, record)
    return data


def load_coco_gt(path: str | Path) -> dict:
    """Read and check a COCO ground-truth file."""
    return validate_coco_gt(read_json(path), path)


def validate_coco_results(results: Any, gt: dict, path: str | Path = "<memory>", iou_type: str | None = None) -> list[dict]:
    """Check a COCO results list against its ground truth (known images and categories)."""
    path = Path(path)
    if isinstance(results, dict) and "annotations" in results:
        results = results["annotations"]
    if not isinstance(results, list):
        raise InputError("a COCO results file must hold a JSON list of detections", path)
    image_ids = {img["id"] for img in gt["images"]}
    category_ids = {cat["id"] for cat in gt["categories"]}
    for i, det in enumerate(results):
        if not isinstance(det, dict):
            raise InputError("detection must be an object", path, f"results[{i}]")
        record = f"results[{i}] (image_id={det.get('image_id')})"
        if det.get("image_id") not in image_ids:
            raise InputError("detection references an image_id that is not in the ground truth", path, record)
        if det.get("category_id") not in category_ids:
            raise InputError(f"detection references an unknown category_id {det.get('category_id')!r}", path, record)
        score = det.get("score")
        if not isinstance(score, (int, float)) or not np.isfinite(score):
            raise InputError("detection needs a finite numeric 'score'", path, record)
        if iou_type == "segm" and "segmentation" not in det:
            raise InputError("segm evaluation needs a 'segmentation' in every detection", path, record)
        if iou_type == "bbox" and "bbox" not in det:
            raise InputError("bbox evaluation needs a 'bbox' in every detection", path, record)
        if "bbox" in det:
            check_bbox(det["bbox"], path, record)
        if "segmentation" in det:
            check_segmentation(det["segmentation"], path, record, "segmentation")
    return results


def load_coco_results(path: str | Path, gt: dict, iou_type: str | None = None) -> list[dict]:
    """Read and check a COCO results file."""
    return validate_coco_results(read_json(path), gt, path, iou_type)


def segmentation_to_rle(seg: list | dict, height: int, width: int) -> dict:
    """Polygon list, uncompressed RLE or compressed RLE -> compressed RLE (counts as str)."""
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg.get("counts"), list):
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        rle = dict(seg)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    if isinstance(rle["counts"], bytes):
        rle["counts"] = rle["counts"].decode("ascii")
    return rle


def segmentation_to_mask(seg: list | dict, height: int, width: int) -> np.ndarray:
    """Decode any COCO segmentation into a (H, W) uint8 mask."""
    rle = segmentation_to_rle(seg, height, width)
    rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8)


def mask_to_rle(mask: np.ndarray) -> dict:
    """(H, W) binary mask -> compressed RLE with a JSON-ready str 'counts'."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def check_images_exist(gt: dict, image_dir: str | Path, path: str | Path = "<memory>") -> None:
    """Fail on the first image record whose file is not under ``image_dir``."""
    image_dir = Path(image_dir)
    for i, img in enumerate(gt["images"]):
        name = img.get("file_name")
        if not name:
            raise InputError("image record has no 'file_name'", path, f"images[{i}] (id={img['id']})")
        if not (image_dir / name).is_file():
            raise InputError(f"missing image file {image_dir / name}", path, f"images[{i}] (id={img['id']})")


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def image_folder_coco(image_dir: str | Path) -> dict:
    """A COCO dict with no annotations for every image under ``image_dir`` (ids 1.. in name order),
    so a folder of raw images can be predicted on."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise InputError("image folder not found", image_dir)
    files = sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder", image_dir)
    images = []
    for k, path in enumerate(files, start=1):
        try:
            with Image.open(path) as img:
                width, height = img.size
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"cannot read image ({exc.__class__.__name__})", path) from None
        images.append({"id": k, "file_name": path.relative_to(image_dir).as_posix(), "height": height, "width": width})
    return {"images": images, "annotations": [], "categories": []}
