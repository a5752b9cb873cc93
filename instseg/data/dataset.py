"""A torchvision-detection-style dataset over any COCO instance JSON and its image folder.

``dataset[i]`` returns ``(image, target)``: ``image`` is a float tensor (3, H, W) in [0, 1];
``target`` is a dict of plain tensors, the format torchvision's detection models train on,
plus the occlusion fields when the JSON carries them (OccludedShapes, or KINS/COCOA converted by
:mod:`instseg.data.amodal_formats`):

==================  ===================  ====================================================
key                 type                 meaning
==================  ===================  ====================================================
boxes               float32 (N, 4)       visible box, xyxy, from ``bbox`` (from the mask if absent)
labels              int64 (N,)           1..K, categories sorted by id (0 is background)
masks               uint8 (N, H, W)      visible mask (``segmentation``)
iscrowd             int64 (N,)           COCO crowd flag
area                float32 (N,)         ``area`` (mask pixel count if absent)
image_id            int                  the image's COCO id
annotation_ids      int64 (N,)           COCO annotation ids, to map predictions back
amodal_masks        uint8 (N, H, W)      ``amodal_segmentation``
amodal_boxes        float32 (N, 4)       ``amodal_bbox`` as xyxy (from the amodal mask if absent)
occlusion_ratio     float32 (N,)         ``occlusion_ratio``
depth               int64 (N,)           ``depth``, larger = closer to the camera
occluded_by         bool (N, N)          [i, j]: annotation j is in i's ``occluder_ids``
==================  ===================  ====================================================

``amodal_masks`` and ``depth`` are what the depth occluder rule reads (exact occluders; the
detectors' transform resizes ``amodal_masks`` and ``amodal_boxes`` with the image, as torchvision
does ``masks``). An occlusion key is present when *every* annotation of the file has its source
field (so all targets of one dataset have the same keys and batch together); a field that only some
annotations have is ignored with a warning. ``occluded_by`` only links annotations that are in
the same target (crowd or skipped annotations drop out).

Decisions:

* Crowd: ``include_crowd=False`` (default) drops ``iscrowd=1`` annotations from the targets, as
  torchvision's detection references do for training (a crowd region is not one object, and a
  mask loss on it teaches the wrong thing). Evaluation reads crowd regions from the JSON, not
  from here. ``include_crowd=True`` keeps them, flagged in ``iscrowd``.
* Images: 8-bit grayscale (L, 1), palette (P), RGBA, LA and CMYK images are converted to RGB
  with PIL. **Alpha is dropped**: each pixel keeps its stored colour whatever its opacity, as
  PIL's ``convert("RGB")``, torchvision's ``read_image(..., RGB)`` and detectron2 do, so a model
  sees the same pixels here as in those pipelines. Palette transparency is resolved through
  RGBA first (same colours, without PIL's palette-transparency warning). 16-bit and float images
  are an ``InputError``: PIL would silently saturate them to white.
* Empty masks: an annotation whose mask decodes to no pixels is an ``InputError`` naming the
  file and the annotation (``on_empty_mask="error"``), or is skipped with a warning
  (``on_empty_mask="skip"``). Checked when the image is loaded, since decoding every mask up
  front would cost as much as one epoch.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

from instseg.data.coco_json import check_images_exist, load_coco_gt, segmentation_to_mask, validate_coco_gt
from instseg.errors import InputError

Target = dict[str, Any]
Transforms = Callable[[Tensor, Target], tuple[Tensor, Target]]

# target key -> the annotation field it needs
OCCLUSION_FIELDS = {
    "amodal_masks": "amodal_segmentation",
    "occlusion_ratio": "occlusion_ratio",
    "depth": "depth",
    "occluded_by": "occluder_ids",
}


def load_rgb(path: Path) -> Image.Image:
    """Open an 8-bit image as RGB (alpha dropped, see the module docstring)."""
    with Image.open(path) as img:
        img.load()
        if img.mode.startswith("I") or img.mode == "F":
            raise ValueError(f"{img.mode} (16-bit or float) image; convert it to 8 bits first")
        if img.mode in ("P", "PA"):
            img = img.convert("RGBA")
        return img.convert("RGB")


def _xywh_to_xyxy(boxes: list[list[float]]) -> Tensor:
    b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return torch.cat([b[:, :2], b[:, :2] + b[:, 2:]], dim=1)


def _boxes(anns: list[dict], key: str, masks: list[np.ndarray]) -> Tensor:
    """xyxy float32 (N, 4) from each annotation's xywh ``key``, or from its mask when the field is absent."""
    return _xywh_to_xyxy([a[key] if key in a else _mask_xywh(m) for a, m in zip(anns, masks)])


def _mask_xywh(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]


def _stack(masks: list[np.ndarray], height: int, width: int) -> Tensor:
    if not masks:
        return torch.zeros((0, height, width), dtype=torch.uint8)
    return torch.from_numpy(np.stack(masks))


class CocoInstanceDataset(Dataset):
    """COCO instances (+ optional amodal/occlusion fields) as torchvision detection samples.

    annotations: a COCO JSON path, or an already loaded dict (e.g. from ``load_amodal``).
    image_dir: folder that ``file_name`` is relative to.
    transforms: ``transforms(image, target) -> (image, target)``, applied last.
    include_crowd: keep ``iscrowd=1`` annotations (default: drop them, see module docstring).
    on_empty_mask: ``"error"`` or ``"skip"`` for annotations whose mask decodes empty.
    check_images: check every image file exists on construction (else only when loaded).
    """

    def __init__(self, annotations: str | Path | dict, image_dir: str | Path,
                 transforms: Transforms | None = None, include_crowd: bool = False,
                 on_empty_mask: Literal["error", "skip"] = "error", check_images: bool = True):
        if on_empty_mask not in ("error", "skip"):
            raise ValueError(f"on_empty_mask must be 'error' or 'skip', got {on_empty_mask!r}")
        if isinstance(annotations, dict):
            self.source = "<memory>"
            self.gt = validate_coco_gt(annotations, self.source)
        else:
            self.source = str(annotations)
            self.gt = load_coco_gt(annotations)
        self.image_dir = Path(image_dir)
        if check_images:
            check_images_exist(self.gt, self.image_dir, self.source)
        self.transforms = transforms
        self.include_crowd = include_crowd
        self.on_empty_mask = on_empty_mask

        self.categories = sorted(self.gt["categories"], key=lambda c: c["id"])
        self.category_ids: list[int] = [c["id"] for c in self.categories]
        self.category_id_to_label = {cid: k + 1 for k, cid in enumerate(self.category_ids)}
        self.label_to_category_id = {k: cid for cid, k in self.category_id_to_label.items()}

        self.images: list[dict] = self.gt["images"]
        self.image_ids: list[int] = [img["id"] for img in self.images]
        self._anns: dict[Any, list[tuple[int, dict]]] = defaultdict(list)
        for k, ann in enumerate(self.gt["annotations"]):
            self._anns[ann["image_id"]].append((k, ann))
        self.occlusion_keys = self._occlusion_keys()

    @property
    def num_classes(self) -> int:
        """Number of labels including background (K + 1), as torchvision models take it."""
        return len(self.category_ids) + 1

    def _occlusion_keys(self) -> list[str]:
        anns = self.gt["annotations"]
        keys = []
        for key, field in OCCLUSION_FIELDS.items():
            have = sum(field in a for a in anns)
            if anns and have == len(anns):
                keys.append(key)
            elif have:
                warnings.warn(f"{self.source}: '{field}' is in only {have} of {len(anns)} annotations; "
                              f"target '{key}' is left out", stacklevel=3)
        return keys

    def __len__(self) -> int:
        return len(self.images)

    def _record(self, k: int, ann: dict) -> str:
        return f"annotations[{k}] (id={ann.get('id')}, image_id={ann['image_id']})"

    def _load_image(self, index: int) -> Tensor:
        img = self.images[index]
        record = f"images[{index}] (id={img['id']})"
        if not img.get("file_name"):
            raise InputError("image record has no 'file_name'", self.source, record)
        path = self.image_dir / img["file_name"]
        try:
            pil = load_rgb(path)
        except FileNotFoundError:
            raise InputError(f"missing image file {path}", self.source, record) from None
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise InputError(f"cannot read image file {path} ({exc})", self.source, record) from None
        if pil.size != (img["width"], img["height"]):
            raise InputError(f"image file {path} is {pil.size[0]}x{pil.size[1]} (w x h), the record says "
                             f"{img['width']}x{img['height']}", self.source, record)
        return pil_to_tensor(pil).to(torch.float32) / 255.0

    def _decode(self, k: int, ann: dict, field: str, height: int, width: int) -> np.ndarray:
        if field not in ann:
            raise InputError(f"annotation has no '{field}'", self.source, self._record(k, ann))
        mask = segmentation_to_mask(ann[field], height, width)
        if mask.shape != (height, width):
            raise InputError(f"'{field}' is {mask.shape[0]}x{mask.shape[1]} (h x w), the image is "
                             f"{height}x{width}", self.source, self._record(k, ann))
        return mask

    def _instances(self, image_id: Any, height: int, width: int) -> list[tuple[int, dict, np.ndarray]]:
        """The image's annotations kept for the target, with their decoded visible masks."""
        kept = []
        for k, ann in self._anns.get(image_id, []):
            if ann.get("iscrowd", 0) and not self.include_crowd:
                continue
            mask = self._decode(k, ann, "segmentation", height, width)
            if not mask.any():
                if self.on_empty_mask == "error":
                    raise InputError("'segmentation' decodes to an empty mask (use on_empty_mask='skip' to "
                                     "drop such annotations)", self.source, self._record(k, ann))
                warnings.warn(f"{self.source}: {self._record(k, ann)}: empty mask, annotation skipped",
                              stacklevel=3)
                continue
            kept.append((k, ann, mask))
        return kept

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        img = self.images[index]
        height, width = img["height"], img["width"]
        image = self._load_image(index)
        kept = self._instances(img["id"], height, width)
        anns = [ann for _, ann, _ in kept]
        masks = [m for _, _, m in kept]
        target: Target = {
            "boxes": _boxes(anns, "bbox", masks),
            "labels": torch.tensor([self.category_id_to_label[a["category_id"]] for a in anns], dtype=torch.int64),
            "masks": _stack(masks, height, width),
            "iscrowd": torch.tensor([int(a.get("iscrowd", 0)) for a in anns], dtype=torch.int64),
            "area": torch.tensor([float(a.get("area", m.sum())) for a, m in zip(anns, masks)], dtype=torch.float32),
            "image_id": img["id"],
            "annotation_ids": torch.tensor([a.get("id", -1) for a in anns], dtype=torch.int64),
        }
        target.update(self._occlusion_target(kept, height, width))
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def _occlusion_target(self, kept: list[tuple[int, dict, np.ndarray]], height: int, width: int) -> Target:
        anns = [ann for _, ann, _ in kept]
        out: Target = {}
        if "amodal_masks" in self.occlusion_keys:
            amodal = [self._decode(k, ann, "amodal_segmentation", height, width) for k, ann, _ in kept]
            out["amodal_masks"] = _stack(amodal, height, width)
            out["amodal_boxes"] = _boxes(anns, "amodal_bbox", amodal)
        if "occlusion_ratio" in self.occlusion_keys:
            out["occlusion_ratio"] = torch.tensor([float(a["occlusion_ratio"]) for a in anns], dtype=torch.float32)
        if "depth" in self.occlusion_keys:
            out["depth"] = torch.tensor([int(a["depth"]) for a in anns], dtype=torch.int64)
        if "occluded_by" in self.occlusion_keys:
            position = {a.get("id"): j for j, a in enumerate(anns)}
            occluded_by = torch.zeros((len(anns), len(anns)), dtype=torch.bool)
            for i, a in enumerate(anns):
                cols = [position[o] for o in a["occluder_ids"] if o in position]
                occluded_by[i, cols] = True
            out["occluded_by"] = occluded_by
        return out


def collate_fn(batch: list[tuple[Tensor, Target]]) -> tuple[list[Tensor], list[Target]]:
    """DataLoader collate for detection: images and targets as two lists (sizes may differ)."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)


class ConcatInstanceDataset(Dataset):
    """Several :class:`CocoInstanceDataset` with the same categories seen as one training set.

    Why: training on a base set plus extra images (e.g. synthetic occlusion) without writing a
    merged JSON whose image and annotation ids would have to be renumbered. Labels agree across
    the parts because they share their categories.
    """

    def __init__(self, parts: Sequence[CocoInstanceDataset]) -> None:
        if not parts:
            raise ValueError("ConcatInstanceDataset needs at least one dataset")
        first = parts[0]
        for part in parts[1:]:
            mine = [(c["id"], c.get("name")) for c in first.categories]
            theirs = [(c["id"], c.get("name")) for c in part.categories]
            if mine != theirs:
                raise ValueError(f"{part.source} has other categories than {first.source}")
        self.parts = list(parts)
        self.label_to_category_id = first.label_to_category_id
        self.num_classes = first.num_classes
        self.occlusion_keys = [k for k in first.occlusion_keys if all(k in p.occlusion_keys for p in parts)]
        self._offsets = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        part = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return self.parts[part][index - int(self._offsets[part])]
