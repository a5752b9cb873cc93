"""Occlusion targets for mask heads and the COCO-OCC image subset.

The target functions take plain torch tensors of all N instances of one image (N is the batch),
run on CPU or CUDA and never loop over pixels: pairwise tests and unions are matrix products over
the flattened masks, and morphology is max-pooling.

Box regions. An xyxy box covers pixel columns ``floor(x1) <= x < floor(x2)`` and rows
``floor(y1) <= y < floor(y2)``: the truncation BCNet's reference code uses when it slices
``mask[int(y1):int(y2), int(x1):int(x2)]``. For the boxes of pixel masks (COCO ``bbox`` =
``[min, min, max + 1 - min, ...]``) this is exactly the mask's bounding rectangle.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from pycocotools import mask as mask_utils
from torchvision.ops import box_convert, box_iou

from instseg.data.coco_json import segmentation_to_rle

Ratio = Literal["iou", "min"]


def box_overlap(boxes1: Tensor, boxes2: Tensor, ratio: Ratio = "iou") -> Tensor:
    """Pairwise overlap (N x M) of xyxy boxes: ``"iou"`` = inter / union, ``"min"`` = inter / smaller area.

    ``"min"`` is 1 whenever one box contains the other, which IoU is not; COCO-OCC offers both.
    Pairs whose denominator is zero (degenerate boxes) get 0.
    """
    if ratio not in ("iou", "min"):
        raise ValueError(f"ratio must be 'iou' or 'min', got {ratio!r}")
    if not boxes1.is_floating_point():
        boxes1, boxes2 = boxes1.float(), boxes2.float()
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    area1 = (boxes1[:, 2:] - boxes1[:, :2]).clamp(min=0).prod(dim=1)
    area2 = (boxes2[:, 2:] - boxes2[:, :2]).clamp(min=0).prod(dim=1)
    if ratio == "iou":
        denom = area1[:, None] + area2[None, :] - inter
    else:
        denom = torch.minimum(area1[:, None], area2[None, :])
    return torch.where(denom > 0, inter / denom.clamp(min=torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))


def box_iou_xywh(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU (N x M) of COCO-style xywh boxes."""
    return box_iou(box_convert(boxes1, "xywh", "xyxy"), box_convert(boxes2, "xywh", "xyxy"))


def box_regions(boxes: Tensor, height: int, width: int) -> Tensor:
    """Bool (N, H, W): the pixels inside each xyxy box, by the truncation rule in the module docstring."""
    edges = torch.floor(boxes.float())
    cols = torch.arange(width, device=boxes.device, dtype=edges.dtype)
    rows = torch.arange(height, device=boxes.device, dtype=edges.dtype)
    in_x = (cols[None, :] >= edges[:, 0:1]) & (cols[None, :] < edges[:, 2:3])  # (N, W)
    in_y = (rows[None, :] >= edges[:, 1:2]) & (rows[None, :] < edges[:, 3:4])  # (N, H)
    return in_y[:, :, None] & in_x[:, None, :]


def mask_boxes(masks: Tensor) -> Tensor:
    """Float (N, 4) xyxy boxes of (N, H, W) masks, x2/y2 exclusive (COCO convention); empty masks get zeros."""
    h, w = masks.shape[-2:]
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # (N, H), (N, W)
    x1 = cols.to(torch.uint8).argmax(dim=1)
    x2 = w - cols.flip(1).to(torch.uint8).argmax(dim=1)
    y1 = rows.to(torch.uint8).argmax(dim=1)
    y2 = h - rows.flip(1).to(torch.uint8).argmax(dim=1)
    boxes = torch.stack([x1, y1, x2, y2], dim=1).to(torch.float32)
    return boxes * rows.any(dim=1, keepdim=True)


def _union_of_selected(select: Tensor, masks: Tensor) -> Tensor:
    """Bool (N, H, W): for each i, the union of masks[j] over j with select[i, j]."""
    n, h, w = masks.shape
    counts = select.to(torch.float32) @ masks.reshape(n, h * w).to(torch.float32)
    return (counts > 0).reshape(n, h, w)


def _pairwise_touch(a: Tensor, b: Tensor) -> Tensor:
    """Bool (N, N): [i, j] true when a[i] and b[j] share at least one pixel."""
    n, h, w = a.shape
    shared = a.reshape(n, h * w).to(torch.float32) @ b.reshape(n, h * w).to(torch.float32).T
    return shared > 0


def occluder_masks_reference(masks: Tensor, boxes: Tensor, iou_thresh: float = 0.05, min_pixels: int = 20) -> Tensor:
    """BCNet's occluder target: the other objects' visible masks inside instance i's box.

    For each i: union the visible masks of every other instance j whose box IoU with box i is
    ``> iou_thresh``; keep the pixels inside box i; keep the result only if it has ``> min_pixels``
    pixels, else return an empty mask. No depth: an object behind i counts as an "occluder" too,
    which is what the reference trains on COCO, where depth is unknown.

    Differences from the reference loader (``process_dataset.py``): IoU is the continuous one
    (torchvision) instead of its ``+1`` pixel-inclusive formula, and the target stays a bitmap
    instead of being traced back into polygons with ``find_contours``.

    masks: bool (N, H, W) visible masks; boxes: (N, 4) xyxy. Returns bool (N, H, W).
    """
    n, h, w = masks.shape
    masks = masks.bool()
    near = box_iou(boxes, boxes) > iou_thresh
    near &= ~torch.eye(n, dtype=torch.bool, device=masks.device)
    occluders = _union_of_selected(near, masks) & box_regions(boxes, h, w)
    keep = occluders.reshape(n, h * w).sum(dim=1) > min_pixels
    return occluders & keep[:, None, None]


def occluder_masks_depth(masks: Tensor, depth: Tensor, amodal_masks: Tensor | None = None,
                         boxes: Tensor | None = None) -> Tensor:
    """Depth-aware occluder target: only the objects in front of instance i.

    For each i, instance j (j != i) is an occluder when ``depth[j] > depth[i]`` (larger = closer)
    and j's visible mask shares at least one pixel with i's *region*: i's amodal mask when
    ``amodal_masks`` is given, else i's box. The target is the union of the occluders' visible
    masks, restricted to i's box.

    Exact only with ``amodal_masks``: a visible pixel of j on i's amodal mask is a pixel where j
    hides i, so the occluders are exactly the objects that hide part of i. Without them (data with
    a depth order but no amodal masks) the box stands in for the amodal mask and the target is
    **approximate**: a closer object inside i's box counts even when it does not touch i. Training
    passes the dataset's ``amodal_masks`` whenever it has them
    (``instseg.models.mask_heads.targets.image_mask_targets``).

    i's box is ``boxes[i]`` (xyxy) when given, else the bounding box of i's amodal mask (or of its
    visible mask when there is no amodal mask). No pixel-count cut is applied.

    masks: bool (N, H, W) visible; depth: int (N,); amodal_masks: bool (N, H, W). Returns bool (N, H, W).
    """
    h, w = masks.shape[-2:]
    masks = masks.bool()
    if boxes is None:
        boxes = mask_boxes(masks if amodal_masks is None else amodal_masks.bool())
    in_box = box_regions(boxes, h, w)
    region = in_box if amodal_masks is None else amodal_masks.bool()
    in_front = depth[None, :] > depth[:, None]  # [i, j]: j is closer than i
    occluders = in_front & _pairwise_touch(region, masks)
    return _union_of_selected(occluders, masks) & in_box


def boundary_targets(masks: Tensor, width: int = 1) -> Tensor:
    """Bool mask of the contour band: ``dilation(m) != erosion(m)`` with a (2w+1)x(2w+1) square.

    With the default ``width=1`` (3x3 square) the band is 2 px wide: 1 px inside and 1 px outside
    the contour. Any non-zero value counts as foreground; works on any leading shape (..., H, W).

    Image border: pixels outside the image do not take part (max-pooling pads with -inf), i.e.
    outside counts as background for the dilation and as foreground for the erosion. A mask that
    touches the image edge therefore gets no band along that edge. This is scikit-image's default
    (``binary_erosion``/``binary_dilation`` ``mode='ignore'``), not scipy's ``border_value=0``.
    """
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    shape = masks.shape
    m = (masks != 0).reshape(-1, 1, shape[-2], shape[-1]).to(torch.float16)
    k = 2 * width + 1
    dilated = F.max_pool2d(m, k, stride=1, padding=width)
    eroded = 1 - F.max_pool2d(1 - m, k, stride=1, padding=width)
    return (dilated != eroded).reshape(shape)


def _annotation_bbox(ann: dict, img: dict) -> list[float]:
    if "bbox" in ann:
        return ann["bbox"]
    rle = segmentation_to_rle(ann["segmentation"], img["height"], img["width"])
    return mask_utils.toBbox({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).tolist()


def coco_occ_image_ids(gt: dict, threshold: float = 0.2, ratio: Ratio = "iou") -> list[int]:
    """Images of the COCO-OCC subset, in the order of ``gt["images"]``.

    BCNet: "images where the overlap ratio between the bounding boxes of objects is at least 0.2".
    An image is kept when some pair of its non-crowd annotations has box overlap ``>= threshold``.
    The paper does not define the ratio; ``"iou"`` (our reading, the default) is intersection over
    union, ``"min"`` is intersection over the smaller box's area. Boxes are the ``bbox`` fields
    (visible boxes; COCO has no others; taken from the mask when absent), compared in float64.
    """
    images = {img["id"]: img for img in gt["images"]}
    boxes_by_image: dict[int, list] = defaultdict(list)
    for ann in gt["annotations"]:
        if not ann.get("iscrowd", 0):
            boxes_by_image[ann["image_id"]].append(_annotation_bbox(ann, images[ann["image_id"]]))
    keep = []
    for img in gt["images"]:
        boxes = boxes_by_image.get(img["id"], [])
        if len(boxes) < 2:
            continue
        xyxy = box_convert(torch.tensor(boxes, dtype=torch.float64), "xywh", "xyxy")
        if torch.triu(box_overlap(xyxy, xyxy, ratio), diagonal=1).max() >= threshold:
            keep.append(img["id"])
    return keep
