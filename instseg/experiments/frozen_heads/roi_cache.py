"""The frozen detector's side of a head ablation: backbone passes, ROI pooling, and the cache of
ROI features and targets every head trains on.

Why: on 2 CPU cores the backbone is most of a training step, so it runs once per training image;
the ROIs of the ground-truth boxes and of jittered copies of them (simulated proposals) are pooled
by the detector's own mask pooler and kept in float16 with all their 28x28 targets, built once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import MultiScaleRoIAlign, box_iou, clip_boxes_to_image

from instseg.data.dataset import CocoInstanceDataset
from instseg.engine import derive_seed
from instseg.models.detectors import detector_parts
from instseg.models.mask_heads import mask_head_targets
from instseg.models.mask_heads.targets import image_mask_targets

JITTER = 0.2  # each jittered box edge moves by up to this fraction of the box's width / height
MIN_JITTER_IOU = 0.5  # a jittered box counts as a proposal of its instance, as in training
BACKBONE_BATCH = 8  # images per backbone forward
HEAD_BATCH = 128  # ROIs per head forward outside training: validation loss, evaluation (512 ran slower on 2 cores)


@dataclass
class BackboneOutput:
    """One image after the frozen backbone: the FPN levels its mask pooler reads ([1, C, h, w]) and sizes."""

    index: int
    target: dict[str, Any]
    levels: dict[str, Tensor]
    size: tuple[int, int]  # after the detector's transform: the frame the pooler's boxes live in
    original: tuple[int, int]


@torch.no_grad()
def backbone_passes(detector: nn.Module, dataset: CocoInstanceDataset, indices: Sequence[int]
                    ) -> Iterator[BackboneOutput]:
    """Run the detector's own transform (normalisation, resizing) and backbone, in eval mode,
    so the features match what its mask branch saw in training."""
    transform, backbone, pool = detector_parts(detector)
    detector.eval()
    for start in range(0, len(indices), BACKBONE_BATCH):
        chunk = list(indices[start:start + BACKBONE_BATCH])
        images, targets = zip(*(dataset[i] for i in chunk))
        image_list, _ = transform(list(images))
        features = backbone(image_list.tensors)
        for k, (i, image, target, size) in enumerate(zip(chunk, images, targets, image_list.image_sizes)):
            levels = {name: features[name][k:k + 1] for name in pool.featmap_names}
            yield BackboneOutput(i, target, levels, tuple(size), tuple(image.shape[-2:]))


def pool_boxes(pool: MultiScaleRoIAlign, item: BackboneOutput, boxes: Tensor) -> Tensor:
    """14x14 features of ``boxes`` (original image coordinates) of one image."""
    boxes = resize_boxes(boxes, list(item.original), list(item.size)) if item.size != item.original else boxes
    levels = {name: level.float() for name, level in item.levels.items()}
    return pool(levels, [boxes], [item.size])


@torch.no_grad()
def roi_features(detector: nn.Module, dataset: CocoInstanceDataset, index: int, boxes: Tensor) -> Tensor:
    """14x14 features [R, C, 14, 14] of ``boxes`` (original coordinates) in image ``index``, as
    the frozen detector's mask pooler sees them: what a figure of one head's ROI outputs needs."""
    item = next(backbone_passes(detector, dataset, [index]))
    return pool_boxes(detector_parts(detector)[2], item, boxes)


_ROI_FIELDS = ("features", "boxes", "image_index", "instance", "is_gt", "category_ids", "labels", "annotation_ids")


@dataclass
class RoiCache:
    """Pooled ROI features (float16 [R, C, 14, 14]) and their 28x28 targets (bool [R, 28, 28] per
    key), with where each ROI came from. Targets are built once, here, not per iteration."""

    features: Tensor
    targets: dict[str, Tensor]
    boxes: Tensor  # float32 [R, 4], xyxy in original image coordinates
    image_index: Tensor  # int64 [R], index into the dataset
    instance: Tensor  # int64 [R], the matched instance in its image's target
    is_gt: Tensor  # bool [R], the ground-truth box itself (else a jittered copy)
    category_ids: Tensor  # int64 [R], the matched instance's category id
    labels: Tensor  # int64 [R], the matched instance's label (the detector's class index)
    annotation_ids: Tensor  # int64 [R], the matched instance's annotation id (-1 if it has none)
    occluder_rule: str
    amodal: bool
    build_seconds: float

    def __len__(self) -> int:
        return len(self.features)

    @property
    def nbytes(self) -> int:
        """Memory held by the tensors."""
        tensors = [*(getattr(self, name) for name in _ROI_FIELDS), *self.targets.values()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def select(self, keep: Tensor) -> "RoiCache":
        """The ROIs ``keep`` (bool [R]): e.g. the base categories of partial supervision or the
        instances of a few-shot draw. Only valid for targets that depend on the ROI's own
        instance alone (``occluder_rule="none"``), which a subset cannot leak into."""
        if self.occluder_rule != "none":
            raise ValueError("a ROI subset of a cache with occluder targets would keep targets built from the "
                             "masks of instances left out; build the cache with occluder_rule='none'")
        if not bool(keep.any()):
            raise ValueError("the selection keeps no ROI")
        fields = {name: getattr(self, name)[keep] for name in _ROI_FIELDS}
        return RoiCache(**fields, targets={k: t[keep] for k, t in self.targets.items()},
                        occluder_rule=self.occluder_rule, amodal=self.amodal, build_seconds=self.build_seconds)

    @staticmethod
    def concat(caches: Sequence["RoiCache"]) -> "RoiCache":
        """The ROIs of ``caches`` (built on one dataset by the same rule) in one cache: a training
        set's cache extended by an extra set's, without caching the training set again. Jitter
        depends on the image index alone, so caching images 0..N-1 and N..M-1 apart gives the cache
        of 0..M-1."""
        first = caches[0]
        for other in caches[1:]:
            if (other.occluder_rule, other.amodal, sorted(other.targets)) != (first.occluder_rule, first.amodal,
                                                                               sorted(first.targets)):
                raise ValueError("caches built by different rules (occluder rule, amodal, targets) cannot be joined")
        fields = {name: torch.cat([getattr(c, name) for c in caches]) for name in _ROI_FIELDS}
        return RoiCache(**fields, targets={k: torch.cat([c.targets[k] for c in caches]) for k in first.targets},
                        occluder_rule=first.occluder_rule, amodal=first.amodal,
                        build_seconds=sum(c.build_seconds for c in caches))

    def of_categories(self, category_ids: Sequence[int]) -> "RoiCache":
        """The ROIs of instances of ``category_ids`` (partial supervision's base categories)."""
        return self.select(torch.isin(self.category_ids, torch.as_tensor(list(category_ids), dtype=torch.long)))

    def of_annotations(self, annotation_ids: Sequence[int]) -> "RoiCache":
        """The ROIs of the instances ``annotation_ids`` (a few-shot draw)."""
        return self.select(torch.isin(self.annotation_ids, torch.as_tensor(list(annotation_ids), dtype=torch.long)))

    def batch(self, rois: Tensor | Sequence[int]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Float32 features, labels and float 0/1 targets of the ROIs ``rois``, as a head and its
        loss take them."""
        rois = torch.as_tensor(rois, dtype=torch.long)
        return (self.features[rois].float(), self.labels[rois],
                {key: t[rois].float() for key, t in self.targets.items()})


def jitter_boxes(boxes: Tensor, count: int, size: tuple[int, int], generator: torch.Generator
                 ) -> tuple[Tensor, Tensor]:
    """``count`` jittered copies of each box (edges moved uniformly by up to ``JITTER`` of its width
    or height, clipped to the image), keeping those with IoU >= 0.5 with their box, like the
    positive proposals a head trains on. Returns (boxes [J, 4], parent box index [J])."""
    parents = torch.arange(len(boxes)).repeat_interleave(count)
    source = boxes[parents]
    extent = (source[:, 2:] - source[:, :2]).repeat(1, 2)
    noise = (torch.rand(source.shape, generator=generator) * 2 - 1) * JITTER * extent
    jittered = clip_boxes_to_image(source + noise, size)
    keep = box_iou(jittered, source).diagonal() >= MIN_JITTER_IOU
    return jittered[keep], parents[keep]


def roi_targets(target: Mapping[str, Any], rois: Tensor, matched: Tensor, occluder_rule: str, amodal: bool
                ) -> dict[str, Tensor]:
    """Bool 28x28 targets of one image's ROIs, by the same rule as end-to-end training
    (:class:`~instseg.models.mask_branch.RoIMaskBranch`). With ``amodal``, ROIs are matched to
    amodal boxes, "mask"/"boundary" are the amodal mask and its contour, "visible_mask" is the
    visible mask, and occluder targets stay the occluders' visible masks (by the depth rule with the
    target's amodal masks when it has them: exact; see :func:`image_mask_targets`)."""
    boxes = target["amodal_boxes"] if amodal else target["boxes"]
    targets = image_mask_targets(target, rois, matched, occluder_rule, boxes=boxes)
    if amodal:
        targets["visible_mask"] = targets.pop("mask")
        targets |= mask_head_targets(target["amodal_masks"], boxes, rois, matched, occluder="none")
    return {key: value.bool() for key, value in targets.items()}


def cache_roi_features(detector: nn.Module, dataset: CocoInstanceDataset, image_indices: Sequence[int],
                       jitter_per_gt: int, seed: int, occluder_rule: str = "auto", amodal: bool = False) -> RoiCache:
    """Run the frozen detector's backbone once per image and cache the ROIs every head trains on:
    each ground-truth box (amodal box with ``amodal``) plus ``jitter_per_gt`` jittered copies
    (deterministic from ``seed`` and the image index), pooled by the detector's own mask-branch
    pooler, with their targets (:func:`roi_targets`)."""
    if amodal and "amodal_masks" not in getattr(dataset, "occlusion_keys", ()):
        raise ValueError("amodal training needs a dataset with amodal masks ('amodal_segmentation')")
    start = time.perf_counter()
    pool = detector_parts(detector)[2]
    parts: dict[str, list[Tensor]] = {name: [] for name in _ROI_FIELDS}
    label_map = dataset.label_to_category_id
    to_category = torch.tensor([label_map.get(k, -1) for k in range(max(label_map) + 1)], dtype=torch.long)
    targets: list[dict[str, Tensor]] = []
    for item in backbone_passes(detector, dataset, image_indices):
        gt_boxes = item.target["amodal_boxes" if amodal else "boxes"]
        generator = torch.Generator().manual_seed(derive_seed(seed, item.index))
        jittered, parents = jitter_boxes(gt_boxes, jitter_per_gt, item.original, generator)
        rois = torch.cat([gt_boxes, jittered])
        matched = torch.cat([torch.arange(len(gt_boxes)), parents])
        targets.append(roi_targets(item.target, rois, matched, occluder_rule, amodal))
        parts["features"].append(pool_boxes(pool, item, rois).half())
        parts["boxes"].append(rois)
        parts["image_index"].append(torch.full((len(rois),), item.index, dtype=torch.long))
        parts["instance"].append(matched)
        parts["is_gt"].append(torch.arange(len(rois)) < len(gt_boxes))
        parts["category_ids"].append(to_category[item.target["labels"][matched]])
        parts["labels"].append(item.target["labels"][matched])
        ann_ids = item.target.get("annotation_ids", torch.full((len(gt_boxes),), -1, dtype=torch.long))
        parts["annotation_ids"].append(ann_ids[matched])
    if not targets:
        raise ValueError("no images to cache")
    merged = {key: torch.cat(values) for key, values in parts.items()}
    merged_targets = {key: torch.cat([t[key] for t in targets]) for key in targets[0]}
    return RoiCache(**merged, targets=merged_targets, occluder_rule=occluder_rule, amodal=amodal,
                    build_seconds=time.perf_counter() - start)
