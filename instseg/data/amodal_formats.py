"""Read the KINS and COCOA amodal datasets into our COCO-with-amodal schema.

Both are converted to the schema OccludedShapes writes (README, "The benchmark and its schema"),
so the dataset, the occlusion targets and the evaluation code read every benchmark the same way.
``load_amodal(path)`` detects the format and returns a dict checked by ``validate_coco_gt``.

KINS (Qi et al. 2019, ``update_{train,test}_2020.json``): COCO-like, one annotation per object.

=======================  ===========================================================================
ours                     KINS
=======================  ===========================================================================
id, image_id,            same fields; ``images`` and ``categories`` are copied unchanged
category_id
segmentation             ``i_segm`` (inmodal = visible polygons)
bbox, area               ``i_bbox``, ``i_area``
amodal_segmentation      ``a_segm``
amodal_bbox,             ``a_bbox``, ``a_area``
amodal_area
occlusion_ratio          ``1 - i_area / a_area``
depth                    ``max(ico_id) - ico_id`` over the image's annotations; only when every
                         annotation of the file has ``ico_id``. Our reading of KINS' "relative
                         occlusion order": ``oco_id`` names an occlusion cluster and ``ico_id`` the
                         order inside it, 0 = unoccluded/front, larger = farther. Objects of
                         different clusters do not overlap, so comparing them does not matter.
occluder_ids             ids of the other annotations of the image whose visible mask (``i_segm``)
                         covers at least one pixel of this object's hidden part (``a_segm`` minus
                         ``i_segm``): such a pixel is where the other object is in front. Derived
                         from the masks, so it does not depend on the ``ico_id`` reading.
iscrowd                  ``iscrowd``, 0 when absent
oco_id, ico_id           kept as they are
=======================  ===========================================================================

COCOA (Zhu et al. 2017, ``COCO_amodal_{train,val}2014.json``): one annotation per *image* with a
``regions`` list; region ``k`` (1-based position in the list) is one object.

=======================  ===========================================================================
ours                     COCOA
=======================  ===========================================================================
id                       1, 2, ... over all regions in file order (regions have no ids)
image_id                 the image annotation's ``image_id``; ``images`` are copied unchanged
category_id              1 for every region: COCOA has no classes, ``categories`` becomes
                         ``[{"id": 1, "name": "object"}]``; the free-text label is kept in ``name``
amodal_segmentation      ``[segmentation]`` (the flat amodal polygon, wrapped as a polygon list)
amodal_bbox,             box and pixel count of the rasterised amodal polygon
amodal_area
segmentation             ``visible_mask`` (RLE); when absent the region is unoccluded and the amodal
                         polygon is used
bbox, area               box and pixel count of the visible mask
occlusion_ratio          ``occlude_rate`` (COCOA's own value), ``1 - area / amodal_area`` if absent
depth                    ``max(order) - order`` over the image's regions (``order`` 1 = front-most)
occluder_ids             the ids of regions ``a`` for every pair ``"a-k"`` in the image's
                         ``depth_constraint`` ("a occludes k"; positions are 1-based region indices)
iscrowd                  0
name, isStuff            kept as they are (``isStuff`` marks stuff regions such as sky or grass)
=======================  ===========================================================================

COCOA regions whose visible mask is empty (fully occluded objects) are dropped with one warning:
they have no visible box and cannot be instance-segmentation targets. They also leave the
``occluder_ids`` of the others.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pycocotools import mask as mask_utils

from instseg.data.coco_json import (check_segmentation, read_json, segmentation_to_mask, segmentation_to_rle,
                                   validate_coco_gt)
from instseg.errors import InputError

Format = Literal["auto", "kins", "cocoa", "coco"]
COCOA_CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}
KINS_KEYS = ("id", "image_id", "category_id", "i_segm", "a_segm", "i_bbox", "a_bbox", "i_area", "a_area")


def detect_format(data: Any) -> Literal["kins", "cocoa", "coco"]:
    """``"cocoa"`` if annotations have ``regions``, ``"kins"`` if they have ``a_segm``/``i_segm``, else ``"coco"``."""
    anns = data.get("annotations") if isinstance(data, dict) else None
    for ann in anns if isinstance(anns, list) else []:
        if isinstance(ann, dict) and "regions" in ann:
            return "cocoa"
        if isinstance(ann, dict) and ("a_segm" in ann or "i_segm" in ann):
            return "kins"
    return "coco"


def load_amodal(path: str | Path, format: Format = "auto") -> dict:
    """Read a KINS, COCOA or COCO(-with-amodal) file into our schema, checked."""
    data = read_json(path)
    fmt = detect_format(data) if format == "auto" else format
    if fmt == "kins":
        return kins_to_coco(data, path)
    if fmt == "cocoa":
        return cocoa_to_coco(data, path)
    if fmt == "coco":
        return validate_coco_gt(data, path)
    raise ValueError(f"format must be 'auto', 'kins', 'cocoa' or 'coco', got {format!r}")


def _check_top_level(data: Any, keys: tuple[str, ...], path: str | Path) -> None:
    if not isinstance(data, dict):
        raise InputError("the file must hold a JSON object", path)
    for key in keys:
        if not isinstance(data.get(key), list):
            raise InputError(f"missing top-level list '{key}'", path)


def _rle_area_bbox(seg: list | dict, height: int, width: int) -> tuple[int, list[float]]:
    rle = segmentation_to_rle(seg, height, width)
    encoded = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return int(mask_utils.area(encoded)), [float(v) for v in mask_utils.toBbox(encoded)]


# ----- KINS

def kins_to_coco(data: Any, path: str | Path = "<memory>") -> dict:
    """Convert a loaded KINS dict (see the module table)."""
    _check_top_level(data, ("images", "annotations", "categories"), path)
    for k, ann in enumerate(data["annotations"]):
        record = f"annotations[{k}] (id={ann.get('id') if isinstance(ann, dict) else None})"
        if not isinstance(ann, dict):
            raise InputError("annotation must be an object", path, record)
        missing = [key for key in KINS_KEYS if key not in ann]
        if missing:
            raise InputError(f"KINS annotation lacks {missing}", path, record)
        if not all(isinstance(ann[key], (int, float)) for key in ("i_area", "a_area")) or ann["a_area"] <= 0:
            raise InputError(f"'i_area' and 'a_area' must be numbers, 'a_area' positive; got "
                             f"{ann['i_area']!r}, {ann['a_area']!r}", path, record)
    out = {key: value for key, value in data.items() if key != "annotations"}
    out["annotations"] = [_kins_annotation(ann) for ann in data["annotations"]]
    validate_coco_gt(out, path)  # before decoding any mask
    images = {img["id"]: img for img in out["images"]}
    by_image: dict[Any, list[dict]] = {}
    for ann in out["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    with_depth = all("ico_id" in ann for ann in out["annotations"])
    for image_id, anns in by_image.items():
        _kins_occluders(anns, images[image_id]["height"], images[image_id]["width"])
        if with_depth:
            farthest = max(a["ico_id"] for a in anns)
            for a in anns:
                a["depth"] = int(farthest - a["ico_id"])
    return out


def _kins_annotation(ann: dict) -> dict:
    out = {
        "id": ann["id"], "image_id": ann["image_id"], "category_id": ann["category_id"],
        "segmentation": ann["i_segm"], "bbox": ann["i_bbox"], "area": ann["i_area"],
        "iscrowd": int(ann.get("iscrowd", 0)),
        "amodal_segmentation": ann["a_segm"], "amodal_bbox": ann["a_bbox"], "amodal_area": ann["a_area"],
        "occlusion_ratio": 1.0 - ann["i_area"] / ann["a_area"],
    }
    out.update({key: ann[key] for key in ("oco_id", "ico_id") if key in ann})
    return out


def _kins_occluders(anns: list[dict], height: int, width: int) -> None:
    """Set ``occluder_ids``: j occludes i when j's visible mask covers a pixel of i's hidden part."""
    def flat(key: str) -> np.ndarray:
        return np.stack([segmentation_to_mask(a[key], height, width).reshape(-1) for a in anns]).astype(np.int64)

    visible, amodal = flat("segmentation"), flat("amodal_segmentation")
    covers = ((amodal & (1 - visible)) @ visible.T) > 0  # [i, j]: j's visible pixels on i's hidden part
    np.fill_diagonal(covers, False)
    for i, a in enumerate(anns):
        a["occluder_ids"] = [anns[j]["id"] for j in np.flatnonzero(covers[i])]


# ----- COCOA

def cocoa_to_coco(data: Any, path: str | Path = "<memory>") -> dict:
    """Convert a loaded COCOA dict (see the module table)."""
    _check_top_level(data, ("images", "annotations"), path)
    images = {img.get("id"): img for img in data["images"] if isinstance(img, dict)}
    annotations: list[dict] = []
    dropped, next_id = 0, 1
    for k, ann in enumerate(data["annotations"]):
        record = f"annotations[{k}] (image_id={ann.get('image_id') if isinstance(ann, dict) else None})"
        if not isinstance(ann, dict) or not isinstance(ann.get("regions"), list):
            raise InputError("COCOA annotation needs a 'regions' list", path, record)
        if ann.get("image_id") not in images:
            raise InputError("annotation references an unknown image_id", path, record)
        img = images[ann["image_id"]]
        regions = _cocoa_regions(ann, img["height"], img["width"], next_id, path, record)
        next_id += len(regions)
        dropped += sum(r is None for r in regions)
        annotations.extend(_cocoa_link(ann, regions, path, record))
    if dropped:
        warnings.warn(f"{path}: dropped {dropped} fully occluded COCOA region(s) (empty visible mask)", stacklevel=2)
    out = {key: value for key, value in data.items() if key not in ("annotations", "categories")}
    out.update(annotations=annotations, categories=[dict(COCOA_CATEGORY)])
    return validate_coco_gt(out, path)


def _cocoa_regions(ann: dict, height: int, width: int, first_id: int, path: str | Path,
                   record: str) -> list[dict | None]:
    """One annotation per region (None for fully occluded regions), depth not yet set."""
    out: list[dict | None] = []
    for k, region in enumerate(ann["regions"]):
        where = f"{record} regions[{k}]"
        if not isinstance(region, dict) or "segmentation" not in region or not isinstance(region.get("order"), int):
            raise InputError("COCOA region needs 'segmentation' and an integer 'order'", path, where)
        amodal = region["segmentation"]
        if isinstance(amodal, list) and amodal and not isinstance(amodal[0], list):
            amodal = [amodal]
        visible = region.get("visible_mask", amodal)
        check_segmentation(amodal, Path(path), where, "segmentation")
        check_segmentation(visible, Path(path), where, "visible_mask")
        if isinstance(visible, dict) and visible["size"] != [height, width]:
            raise InputError(f"'visible_mask' size {visible['size']} is not the image's [{height}, {width}]",
                             path, where)
        amodal_area, amodal_bbox = _rle_area_bbox(amodal, height, width)
        area, bbox = _rle_area_bbox(visible, height, width)
        if area == 0:
            out.append(None)
            continue
        ratio = region["occlude_rate"] if "occlude_rate" in region else 1.0 - area / amodal_area
        out.append({
            "id": first_id + k, "image_id": ann["image_id"], "category_id": COCOA_CATEGORY["id"],
            "segmentation": visible, "bbox": bbox, "area": area, "iscrowd": 0,
            "amodal_segmentation": amodal, "amodal_bbox": amodal_bbox, "amodal_area": amodal_area,
            "occlusion_ratio": float(ratio), "order": region["order"],
            **{key: region[key] for key in ("name", "isStuff") if key in region},
        })
    return out


def _cocoa_link(ann: dict, regions: list[dict | None], path: str | Path, record: str) -> list[dict]:
    """Set ``depth`` from ``order`` and ``occluder_ids`` from ``depth_constraint``; drop the None regions."""
    occluders: list[list[int]] = [[] for _ in regions]
    for pair in filter(None, ann.get("depth_constraint", "").split(",")):
        try:
            front, back = (int(v) - 1 for v in pair.split("-"))
        except ValueError:
            raise InputError(f"bad depth_constraint pair {pair!r}; expected 'a-b'", path, record) from None
        if not (0 <= front < len(regions) and 0 <= back < len(regions)):
            raise InputError(f"depth_constraint pair {pair!r} names a region that does not exist", path, record)
        if regions[front] is not None:
            occluders[back].append(regions[front]["id"])
    farthest = max((region["order"] for region in ann["regions"]), default=0)
    kept = []
    for region, ids in zip(regions, occluders):
        if region is not None:
            order = region.pop("order")
            kept.append(dict(region, depth=farthest - order, occluder_ids=ids))
    return kept
