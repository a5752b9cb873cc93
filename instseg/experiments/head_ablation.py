"""Mask-head ablations on one frozen, shared detector (BCNet Tables 3.1-3.3, 3.5-3.6 in miniature).

Why: on 2 CPU cores a detector per table row and seed would cost hours per row. DESIGN allows the
head ablations to train the mask head alone on a frozen detector, so here

1. the detector's backbone runs once per training image, and the 14x14 ROI features of the
   ground-truth boxes plus jittered copies of them (simulated proposals) are cached in float16
   with all their 28x28 targets (:func:`cache_roi_features`);
2. each head trains on seeded random minibatches of cached ROIs (:func:`train_head`);
3. every head is evaluated on the same detections of the same detector, computed once
   (:func:`detector_detections`), on backbone features computed once (:func:`image_features`),
   so AP differences between heads come from their masks alone (:func:`predict_masks`).

:func:`run_ablation` runs variants x seeds, training a configuration shared by several table
rows once, and returns one row per (variant, seed).
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import MultiScaleRoIAlign, box_iou, clip_boxes_to_image

from instseg.data.dataset import CocoInstanceDataset
from instseg.engine import InfiniteBatchSampler, TrainConfig, derive_seed
from instseg.engine.checkpoint import atomic_save
from instseg.engine.config import OPTIMIZERS
from instseg.engine.trainer import Trainer
from instseg.engine.validation import ValidationLoss
from instseg.evaluation import DEFAULT_BINS, ap_by_occlusion, evaluate
from instseg.models.detectors import detector_parts, with_head  # noqa: F401 - with_head: the notebooks' end-to-end swap
from instseg.models.inference import detections_to_coco, predict_batches
from instseg.models.mask_heads import (
    MASK_HEADS,
    OcclusionRCNNHead,  # noqa: F401 - moved to instseg.models.mask_heads.orcnn; importable here as before
    build_mask_head,
    count_parameters,
    detector_inputs,
    head_hyperparameters,
    mask_head_targets,
    mask_probabilities,
)
from instseg.models.mask_heads.targets import image_mask_targets

JITTER = 0.2  # each jittered box edge moves by up to this fraction of the box's width / height
MIN_JITTER_IOU = 0.5  # a jittered box counts as a proposal of its instance, as in training
BACKBONE_BATCH = 8  # images per backbone forward
PREDICT_IMAGES = 32  # images whose ROIs go through the head together in evaluation
HEAD_BATCH = 128  # ROIs per head forward in evaluation (512 ran slower on 2 CPU cores)
DECAY_AT = 0.6  # the head schedule's 10x learning-rate decay, as a fraction of the iterations
HEAD_FORMAT = 1  # the head-file layout written by save_head
VAL_POINTS = 20  # validation-loss measurements per head run (the plateau check reads them)


# The one registry of mask heads (an alias, kept for callers of this module): ORCNN and the
# MaskX-style weight transfer live there beside the others.
HEADS = MASK_HEADS


@dataclass(frozen=True)
class HeadVariant:
    """One table row: a head (a name in ``HEADS``) with its switches and training targets.

    ``occluder_rule`` is the rule of :func:`mask_head_targets` ("auto": "depth" when the data
    carries depth, else "reference"); ``amodal`` trains (and evaluates) on amodal masks, with ROIs
    around the amodal boxes. ``mask_categories`` (partial supervision): only ROIs of instances of
    these category ids train the head (None: all); it needs ``occluder_rule="none"``, whose targets
    come from the ROI's own instance alone.

    ``head_kwargs`` are plain hyperparameters (what :func:`config_key` keys a trained head by).
    ``inputs`` are what a head derives from the frozen detector (MaskX's class embeddings: see
    :meth:`for_detector`); they are not hyperparameters, so they stay out of the key and out of
    comparisons (one ablation run has one detector).
    """

    name: str
    head: str
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    occluder_rule: str = "auto"
    amodal: bool = False
    label: str = ""
    mask_categories: tuple[int, ...] | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.mask_categories is not None and self.occluder_rule != "none":
            raise ValueError(f"variant {self.name!r}: partial supervision needs occluder_rule='none' (occluder "
                             "targets would be built from the masks of unsupervised instances)")
        head_hyperparameters(self.head, self.head_kwargs)  # fail here on an unknown head or a non-plain value

    def for_detector(self, detector: nn.Module) -> HeadVariant:
        """This variant with the inputs its head reads from ``detector`` (none for most heads)."""
        return replace(self, inputs=detector_inputs(self.head, detector))


def _bcnet(name: str, label: str, **flags: bool) -> HeadVariant:
    return HeadVariant(name, "bcnet", flags, label=label)


# Table 3.1: occluder targets of the first GCN; occludee contour off (that is Table 3.2's subject).
TABLE_3_1 = (
    _bcnet("t31_baseline", "baseline", occluder_mask=False, occluder_contour=False, occludee_contour=False),
    _bcnet("t31_mask", "occluder mask", occluder_mask=True, occluder_contour=False, occludee_contour=False),
    _bcnet("t31_contour", "occluder contour", occluder_mask=False, occluder_contour=True, occludee_contour=False),
    _bcnet("t31_contour_mask", "occluder contour + mask", occluder_mask=True, occluder_contour=True,
           occludee_contour=False),
)
# Table 3.2: the second GCN; row 2 is Table 3.1's last row, row 3 the full BCNet.
TABLE_3_2 = (
    _bcnet("t32_mask", "mask", guidance=False, occludee_contour=False),
    _bcnet("t32_guidance_mask", "guidance + mask", occludee_contour=False),
    _bcnet("t32_guidance_contour_mask", "guidance + contour + mask"),
)
# Table 3.3: structure. All heads are class-agnostic, so the rows differ only in structure.
TABLE_3_3 = (
    HeadVariant("t33_single_fcn", "fcn", label="single layer, FCN"),
    HeadVariant("t33_single_gcn", "gcn", label="single layer, GCN"),
    HeadVariant("t33_bilayer_fcn", "bilayer_fcn", label="bilayer, FCN"),
    HeadVariant("t33_bilayer_gcn", "bcnet", label="bilayer, GCN (BCNet)"),
)
# Tables 3.5 (COCOA) and 3.6 (KINS): amodal heads, scored with amodal AP. Here both run on the one
# benchmark, and Table 3.6's rows are configurations of Table 3.5 (same config_key): trained once.
TABLE_3_5 = (
    HeadVariant("t35_amodal_mrcnn", "fcn", amodal=True, label="AmodalMRCNN (Mask R-CNN on amodal masks)"),
    HeadVariant("t35_orcnn", "orcnn", amodal=True, label="ORCNN (amodal + visible heads, occlusion mask)"),
    HeadVariant("t35_bcnet", "bcnet", amodal=True, label="BCNet"),
)
TABLE_3_6 = (
    HeadVariant("t36_mask_rcnn", "fcn", amodal=True, label="Mask R-CNN (amodal masks)"),
    HeadVariant("t36_bcnet", "bcnet", amodal=True, label="BCNet"),
)


def build_head(variant: HeadVariant, in_channels: int, channels: int, detector: nn.Module | None = None) -> nn.Module:
    """The variant's head, ``channels`` wide (the same for every row of a table), from the one
    registry (:func:`~instseg.models.mask_heads.build_mask_head`). A head with detector-derived
    inputs reads them from ``detector`` when given, else takes the variant's ``inputs``."""
    inputs = {} if detector is not None else dict(variant.inputs)
    return build_mask_head(variant.head, in_channels, channels, detector=detector, **variant.head_kwargs, **inputs)


def config_key(variant: HeadVariant) -> tuple:
    """What a trained head depends on: the head's registry name and its plain hyperparameters,
    defaults filled in, then the training targets. Variants with equal keys (e.g. Table 3.2 row 3
    and Table 3.3 row 4) are the same experiment and are trained once. The width
    (``conv_channels``) is the table's, and detector-derived inputs are the run's detector's, so
    neither is part of the key."""
    hyper = head_hyperparameters(variant.head, variant.head_kwargs)
    arguments = tuple(sorted((k, repr(v)) for k, v in hyper.items() if k != "conv_channels"))
    return (variant.head, arguments, variant.occluder_rule, variant.amodal, variant.mask_categories)


# --------------------------------------------------------------------------------------------
# Frozen detector: parts, backbone passes, detections


@dataclass
class BackboneOutput:
    """One image after the frozen backbone: the FPN levels its mask pooler reads ([1, C, h, w]) and sizes."""

    index: int
    target: dict[str, Any]
    levels: dict[str, Tensor]
    size: tuple[int, int]  # after the detector's transform: the frame the pooler's boxes live in
    original: tuple[int, int]


@torch.no_grad()
def _backbone_passes(detector: nn.Module, dataset: CocoInstanceDataset, indices: Sequence[int]
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


def _pool(pool: MultiScaleRoIAlign, item: BackboneOutput, boxes: Tensor) -> Tensor:
    """14x14 features of ``boxes`` (original image coordinates) of one image."""
    boxes = resize_boxes(boxes, list(item.original), list(item.size)) if item.size != item.original else boxes
    levels = {name: level.float() for name, level in item.levels.items()}
    return pool(levels, [boxes], [item.size])


@torch.no_grad()
def roi_features(detector: nn.Module, dataset: CocoInstanceDataset, index: int, boxes: Tensor) -> Tensor:
    """14x14 features [R, C, 14, 14] of ``boxes`` (original coordinates) in image ``index``, as
    the frozen detector's mask pooler sees them: what a figure of one head's ROI outputs needs."""
    item = next(_backbone_passes(detector, dataset, [index]))
    return _pool(detector_parts(detector)[2], item, boxes)


@torch.no_grad()
def detector_detections(detector: nn.Module, dataset: CocoInstanceDataset) -> list[dict[str, Tensor]]:
    """The detector's ``boxes``, ``labels``, ``scores`` on every image of ``dataset``: computed once
    per detector and split, then shared by every head so all heads see identical boxes."""
    images = [dataset[i][0] for i in range(len(dataset))]
    keys = ("boxes", "labels", "scores")
    return [{k: pred[k] for k in keys} for pred in predict_batches(detector, images, BACKBONE_BATCH)]


def gt_detections(dataset: CocoInstanceDataset, amodal: bool = False) -> list[dict[str, Tensor]]:
    """Ground-truth boxes (amodal boxes with ``amodal``) as detections with score 1: an oracle-box
    protocol that scores mask quality alone (and the tests' known-answer case)."""
    detections = []
    for i in range(len(dataset)):
        target = dataset[i][1]
        boxes = target["amodal_boxes" if amodal else "boxes"]
        detections.append({"boxes": boxes, "labels": target["labels"], "scores": torch.ones(len(boxes))})
    return detections


# --------------------------------------------------------------------------------------------
# Training cache


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
    for item in _backbone_passes(detector, dataset, image_indices):
        gt_boxes = item.target["amodal_boxes" if amodal else "boxes"]
        generator = torch.Generator().manual_seed(derive_seed(seed, item.index))
        jittered, parents = jitter_boxes(gt_boxes, jitter_per_gt, item.original, generator)
        rois = torch.cat([gt_boxes, jittered])
        matched = torch.cat([torch.arange(len(gt_boxes)), parents])
        targets.append(roi_targets(item.target, rois, matched, occluder_rule, amodal))
        parts["features"].append(_pool(pool, item, rois).half())
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


# --------------------------------------------------------------------------------------------
# Training


def _schedule(iters: int, batch_rois: int, lr: float, seed: int, optimizer: str = "adamw") -> TrainConfig:
    """The engine's config for a head run: warmup over the first 10% (at most 100 iterations),
    one 10x decay at 60%, so the curve can flatten before the plateau check's last 20%."""
    decay = int(DECAY_AT * iters)
    return TrainConfig(max_iters=iters, optimizer=optimizer, lr=lr, batch_size=batch_rois,
                       warmup_iters=min(100, iters // 10), lr_steps=(decay,) if decay > 0 else (), seed=seed)


def validation_rois(cache: RoiCache, count: int) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """A fixed, evenly spread batch of at most ``count`` ROIs of ``cache`` (the same for every
    head trained on it), on which the validation loss is measured."""
    keep = torch.linspace(0, len(cache) - 1, min(count, len(cache))).round().long().unique()
    return cache.batch(keep)


def roi_head_loss(head: nn.Module, batch: tuple[Tensor, Tensor, dict[str, Tensor]]) -> dict[str, Tensor]:
    """The engine's loss function for a mask head on cached ROIs: its own loss beside it."""
    features, labels, targets = batch
    return head.loss(head(features, labels), targets)


class RoiBatches:
    """The engine's batch source over a ROI cache: iteration ``i`` gets ROIs ``pool[sampler(i)]``,
    a pure function of the seed and the iteration (exact resume, and every variant trained with a
    seed sees the same ROIs in the same order)."""

    def __init__(self, cache: RoiCache, pool: Tensor, batch_rois: int, seed: int) -> None:
        self.cache, self.pool = cache, pool
        self.sampler = InfiniteBatchSampler(len(pool), batch_rois, seed)

    def __call__(self, start: int) -> Iterator[tuple[Tensor, Tensor, dict[str, Tensor]]]:
        for iteration in itertools.count(start):
            yield self.cache.batch(self.pool[torch.as_tensor(self.sampler.global_batch(iteration))])


def train_head(variant: HeadVariant, cache: RoiCache, iters: int, batch_rois: int, lr: float, seed: int,
               channels: int, optimizer: str = "adamw", init: nn.Module | None = None,
               val_cache: RoiCache | None = None, val_rois: int = 512, jitter_draw: float = 1.0,
               out_dir: str | Path | None = None, resume: bool = False) -> nn.Module:
    """A fresh head (initialised from ``seed``, or a copy of ``init``'s weights: fine-tuning)
    trained by the engine's :class:`~instseg.engine.Trainer` on minibatches of ``cache``. The seed
    also draws which jittered ROIs the run trains on (every ground-truth box, and each jittered
    copy with probability ``jitter_draw``), so seeds vary the training sample as a rerun on new
    proposals would. With ``out_dir`` the run checkpoints there and can ``resume``.

    The returned head is in eval mode and carries ``loss_curve`` (total loss per iteration) and
    ``train_seconds``; with ``val_cache`` (ROIs of held-out images, built by the same rule), also
    ``val_curve`` (iteration, loss on a fixed batch of ``val_rois`` of them, ``VAL_POINTS``
    times, the last at the end) and ``plateau`` (:func:`~instseg.engine.plateau.plateau_check`).
    """
    if variant.amodal != cache.amodal or variant.occluder_rule != cache.occluder_rule:
        raise ValueError(f"variant {variant.name!r} needs a cache with occluder_rule={variant.occluder_rule!r}, "
                         f"amodal={variant.amodal}; got {cache.occluder_rule!r}, {cache.amodal}")
    config = _schedule(iters, batch_rois, lr, seed, optimizer)
    torch.manual_seed(derive_seed(seed, 0))
    head = build_head(variant, cache.features.shape[1], channels)
    if init is not None:
        head.load_state_dict(init.state_dict())
    draw = torch.rand(len(cache), generator=torch.Generator().manual_seed(derive_seed(seed, 2))) < jitter_draw
    pool = torch.nonzero(cache.is_gt | draw).squeeze(1)
    curve: list[float] = []
    callbacks: list[Callable[[int, dict[str, float]], None]] = [lambda it, row: curve.append(row["loss"])]
    validation = None
    if val_cache is not None:
        features, labels, targets = validation_rois(val_cache, val_rois)
        chunks = [(f, lab, {k: v[i:i + HEAD_BATCH] for k, v in targets.items()})
                  for i, f, lab in zip(range(0, len(features), HEAD_BATCH), features.split(HEAD_BATCH),
                                       labels.split(HEAD_BATCH))]
        validation = ValidationLoss(head, chunks, iters, points=VAL_POINTS, loss_fn=roi_head_loss)
        callbacks.append(validation)
    trainer = Trainer(head, None, config, out_dir, callbacks=callbacks, loss_fn=roi_head_loss,
                      batches=RoiBatches(cache, pool, batch_rois, derive_seed(seed, 1)), device="cpu")
    start = time.perf_counter()
    trainer.train(resume=resume)
    head.loss_curve = curve
    head.train_seconds = time.perf_counter() - start
    if validation is not None:
        head.val_curve = validation.curve()
        head.plateau = validation.check()
    return head.eval()


def save_head(head: nn.Module, variant: HeadVariant, channels: int, seed: int, path: str | Path) -> Path:
    """Write a trained head atomically with what rebuilds it (:func:`load_head`): the variant's
    registry name, plain hyperparameters, width and seed."""
    blob = {"format": HEAD_FORMAT, "variant": variant.name, "head": variant.head, "head_kwargs": variant.head_kwargs,
            "occluder_rule": variant.occluder_rule, "amodal": variant.amodal, "channels": channels, "seed": seed,
            "in_channels": _in_channels(head), "state_dict": head.state_dict()}
    atomic_save(blob, Path(path))
    return Path(path)


def load_head(path: str | Path, detector: nn.Module | None = None) -> tuple[nn.Module, HeadVariant, dict[str, Any]]:
    """A head saved by :func:`save_head`, in eval mode, with its variant and the saved record (seed,
    channels). ``detector`` supplies detector-derived inputs to heads that need them."""
    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    if blob.get("format") != HEAD_FORMAT:
        raise ValueError(f"{path}: not a head file of format {HEAD_FORMAT} (got {blob.get('format')!r})")
    variant = HeadVariant(blob["variant"], blob["head"], blob["head_kwargs"], blob["occluder_rule"], blob["amodal"])
    head = build_head(variant, blob["in_channels"], blob["channels"], detector)
    head.load_state_dict(blob["state_dict"])
    return head.eval(), variant, {k: v for k, v in blob.items() if k != "state_dict"}


def _in_channels(head: nn.Module) -> int:
    first = next(m for m in head.modules() if isinstance(m, nn.Conv2d))
    return int(first.in_channels)


# --------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class ImageFeatures:
    """The frozen backbone's pooler levels of every image of a split (float16, one dict per image),
    computed once and reused by every head's evaluation."""

    items: list[BackboneOutput]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for item in self.items for t in item.levels.values())


def image_features(detector: nn.Module, dataset: CocoInstanceDataset) -> ImageFeatures:
    """Backbone features of every image of ``dataset`` (see :class:`ImageFeatures`)."""
    items = []
    for item in _backbone_passes(detector, dataset, range(len(dataset))):
        item.levels = {name: level.half() for name, level in item.levels.items()}
        item.target = {"image_id": item.target["image_id"]}
        items.append(item)
    return ImageFeatures(items)


@torch.no_grad()
def _mask_probabilities(head: nn.Module, rois: Tensor, labels: Tensor) -> Tensor:
    head.eval()
    if len(rois) == 0:
        return rois.new_zeros((0, 1, 28, 28))
    return torch.cat([mask_probabilities(head(chunk, chunk_labels))
                      for chunk, chunk_labels in zip(rois.split(HEAD_BATCH), labels.split(HEAD_BATCH))])


def predict_masks(detector: nn.Module, head: nn.Module, dataset: CocoInstanceDataset,
                  detections: Sequence[Mapping[str, Tensor]], features: ImageFeatures | None = None,
                  mask_threshold: float = 0.5) -> list[dict]:
    """COCO results of ``head``'s masks on fixed ``detections`` (one dict per image of ``dataset``).

    Boxes, labels and scores are the detections' own, so two heads evaluated on the same
    detections differ in their masks alone: AP differences between heads are mask differences.
    The 28x28 probabilities are pasted into the image (torchvision's ``paste_masks_in_image``)
    and thresholded at ``mask_threshold``. ``features`` (from :func:`image_features`) saves the
    backbone pass when several heads are evaluated on one split.
    """
    features = image_features(detector, dataset) if features is None else features
    if len(features.items) != len(detections):
        raise ValueError(f"{len(detections)} detection dicts for {len(features.items)} images")
    pool = detector_parts(detector)[2]
    label_to_category_id = dataset.label_to_category_id
    records = []
    for start in range(0, len(detections), PREDICT_IMAGES):
        items = features.items[start:start + PREDICT_IMAGES]
        dets = detections[start:start + PREDICT_IMAGES]
        pooled = torch.cat([_pool(pool, item, det["boxes"]) for item, det in zip(items, dets)])
        labels = torch.cat([det["labels"] for det in dets])
        probabilities = _mask_probabilities(head, pooled, labels).split([len(d["boxes"]) for d in dets])
        for item, det, probs in zip(items, dets, probabilities):
            masks = paste_masks_in_image(probs, det["boxes"], item.original)
            pred = {"boxes": det["boxes"], "labels": det["labels"], "scores": det["scores"], "masks": masks}
            records += detections_to_coco(pred, item.target["image_id"], label_to_category_id, mask_threshold)
    return records


@dataclass(frozen=True)
class EvalSet:
    """Ground truth (a COCO dict) and the dataset over the same images; ``image_ids`` scores a
    subset (e.g. COCO-OCC inside val) without predicting it again."""

    gt: dict
    dataset: CocoInstanceDataset
    image_ids: Sequence[int] | None = None
    category_ids: Sequence[int] | None = None  # score these categories only (e.g. the novel ones)


def score(eval_set: EvalSet, results: list[dict], amodal: bool, bins: Sequence[tuple[float, float]] | None,
          prefix: str) -> dict[str, float | None]:
    """Segm AP, AP50, AP75, APs, APm, APl (percent) and, with ``bins``, AP per occlusion bin, as
    ``{prefix}_AP`` etc."""
    kwargs = {"amodal": amodal, "image_ids": eval_set.image_ids}
    metrics = evaluate(eval_set.gt, results, "segm", category_ids=eval_set.category_ids, **kwargs)
    row = {f"{prefix}_{k}": metrics[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
    if bins and eval_set.category_ids is not None:
        raise ValueError("AP by occlusion bin over a category subset is not supported")
    for b in ap_by_occlusion(eval_set.gt, results, bins, "segm", **kwargs) if bins else []:
        row[f"{prefix}_AP_occ_{b['bin'][0]:g}_{b['bin'][1]:g}"] = b["AP"]
    return row


@dataclass(frozen=True)
class AblationConfig:
    """Budget knobs of a head ablation (``channels`` is the same for every variant of a table).

    ``boxes``: "detector" evaluates on the frozen detector's detections; "gt" on ground-truth boxes
    with score 1 (amodal boxes for amodal variants), which isolates mask quality. Amodal variants
    with "detector" need a detector whose boxes are amodal boxes.
    """

    iters: int = 1500
    batch_rois: int = 32
    lr: float = 1e-3
    optimizer: str = "adamw"
    channels: int = 64
    jitter_per_gt: int = 2
    train_images: int | None = None  # the first N images of the training set (None: all)
    cache_seed: int = 0
    val_images: int = 64  # held-out images whose ROIs give each run's validation loss (plateau check)
    val_rois: int = 512
    jitter_draw: float = 0.75  # each seed trains on its own draw of this share of the jittered ROIs
    boxes: str = "detector"
    bins: tuple[tuple[float, float], ...] | None = DEFAULT_BINS

    def __post_init__(self) -> None:  # fail before any cache is built
        if self.boxes not in ("detector", "gt"):
            raise ValueError(f"boxes must be 'detector' or 'gt', not {self.boxes!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}")


def unique_variants(variants: Sequence[HeadVariant]) -> dict[tuple, list[HeadVariant]]:
    """Variants grouped by :func:`config_key`, in first-seen order; repeated identical variants
    (a row listed in two tables) collapse, and two different variants may not share a name."""
    groups: dict[tuple, list[HeadVariant]] = {}
    by_name: dict[str, HeadVariant] = {}
    for variant in variants:
        if variant.name in by_name:
            if by_name[variant.name] != variant:
                raise ValueError(f"two different variants are named {variant.name!r}")
            continue
        by_name[variant.name] = variant
        groups.setdefault(config_key(variant), []).append(variant)
    return groups


class EvalInputs:
    """Per-dataset detections and backbone features, each computed once per run."""

    def __init__(self, detector: nn.Module, boxes: str) -> None:
        self.detector, self.boxes = detector, boxes
        self._features: dict[int, ImageFeatures] = {}
        self._detections: dict[tuple[int, bool], list[dict[str, Tensor]]] = {}

    def check(self, boxes: str, detector: nn.Module | None = None) -> EvalInputs:
        """Self, after making sure it holds the inputs for ``boxes`` (and ``detector``, if given)."""
        if boxes != self.boxes:
            raise ValueError(f"these eval inputs are for boxes={self.boxes!r}, not {boxes!r}")
        if detector is not None and detector is not self.detector:
            raise ValueError("these eval inputs are for another detector")
        return self

    def features(self, dataset: CocoInstanceDataset) -> ImageFeatures:
        if id(dataset) not in self._features:
            self._features[id(dataset)] = image_features(self.detector, dataset)
        return self._features[id(dataset)]

    def detections(self, dataset: CocoInstanceDataset, amodal: bool) -> list[dict[str, Tensor]]:
        key = (id(dataset), amodal and self.boxes == "gt")
        if key not in self._detections:
            self._detections[key] = (gt_detections(dataset, amodal) if self.boxes == "gt"
                                     else detector_detections(self.detector, dataset))
        return self._detections[key]


def _scored_categories(eval_sets: Mapping[str, EvalSet], dataset_key: int) -> set[int] | None:
    """The categories the eval sets on one dataset score (None: all), so only their detections
    need masks."""
    wanted: set[int] = set()
    for eval_set in eval_sets.values():
        if id(eval_set.dataset) == dataset_key:
            if eval_set.category_ids is None:
                return None
            wanted |= set(eval_set.category_ids)
    return wanted


def detections_of_categories(detections: list[dict[str, Tensor]], dataset: CocoInstanceDataset,
                             category_ids: set[int] | None) -> list[dict[str, Tensor]]:
    """The detections whose label is one of ``category_ids`` (None: all)."""
    if category_ids is None:
        return detections
    labels = torch.tensor([k for k, c in dataset.label_to_category_id.items() if c in category_ids], dtype=torch.long)
    return [{key: value[torch.isin(det["labels"], labels)] for key, value in det.items()} for det in detections]


def evaluate_head(head: nn.Module, amodal: bool, eval_sets: Mapping[str, EvalSet], inputs: EvalInputs,
                   cfg: AblationConfig) -> tuple[dict[str, Any], dict[str, list[dict]]]:
    """Predict once per dataset, score every eval set on it; returns (metrics, results per set)."""
    datasets = {id(es.dataset): es.dataset for es in eval_sets.values()}
    prepared = {key: (detections_of_categories(inputs.detections(ds, amodal), ds, _scored_categories(eval_sets, key)),
                      inputs.features(ds)) for key, ds in datasets.items()}
    start = time.perf_counter()
    predictions = {key: predict_masks(inputs.detector, head, datasets[key], *prepared[key]) for key in datasets}
    row: dict[str, Any] = {"predict_seconds": time.perf_counter() - start}
    start = time.perf_counter()
    results = {name: predictions[id(es.dataset)] for name, es in eval_sets.items()}
    for name, eval_set in eval_sets.items():
        row |= score(eval_set, results[name], amodal, cfg.bins, name)
    row["eval_seconds"] = time.perf_counter() - start
    return row, results


def run_ablation(variants: Sequence[HeadVariant], seeds: Sequence[int], detector: nn.Module,
                 train_set: CocoInstanceDataset, eval_sets: Mapping[str, EvalSet | tuple], cfg: AblationConfig,
                 results: dict[tuple[str, int, str], list[dict]] | None = None,
                 heads: dict[tuple[str, int], nn.Module] | None = None,
                 caches: dict[tuple[str, bool], RoiCache] | None = None,
                 inputs: EvalInputs | None = None, val_set: CocoInstanceDataset | None = None) -> pd.DataFrame:
    """Train every distinct configuration of ``variants`` once per seed on the frozen ``detector``
    and score it on every eval set (``name -> EvalSet`` or ``(gt, dataset[, image_ids])``).

    Variants with ``mask_categories`` train on the ROIs of those categories only (partial
    supervision), from the same cache.

    Returns one row per (variant, seed): variant, label, config (the variant trained for it),
    seed, params, train/predict/eval seconds, final loss, the loss curve (a list, to check that it
    flattened), and ``{set}_AP``, ``{set}_AP50``,
    ``{set}_AP75``, ``{set}_APs/m/l``, ``{set}_AP_occ_{lo}_{hi}`` (segm, percent; amodal AP for amodal variants).
    Identical for a given seed apart from the timing columns. ``results``, when given, receives
    the COCO results of each (variant name, seed, set name), e.g. for paired statistics;
    ``heads``, when given, receives each trained head under (variant name, seed), e.g. to save it
    or to draw its outputs; ``caches``, when given, is used and filled with the training caches
    under (occluder rule, amodal), e.g. to train more heads on them afterwards; ``inputs``,
    when given, supplies (and keeps) the detections and backbone features of the eval datasets,
    to share them with later evaluations on the same detector. ``val_set`` (default: the first eval
    set's dataset) gives the first ``cfg.val_images`` images whose ROIs measure each run's
    validation loss, for the plateau check (columns ``plateau_passed``, ``plateau_improvement``,
    ``plateau`` and ``val_curve``); their val caches are kept in ``caches`` under
    ``("val", occluder rule, amodal)``.
    """
    sets = {name: es if isinstance(es, EvalSet) else EvalSet(*es) for name, es in eval_sets.items()}
    val_set = next(iter(sets.values())).dataset if val_set is None else val_set
    groups = unique_variants(variants)
    indices = list(range(len(train_set)))[:cfg.train_images]
    inputs = EvalInputs(detector, cfg.boxes) if inputs is None else inputs.check(cfg.boxes, detector)
    caches = {} if caches is None else caches
    rows: dict[str, list[dict[str, Any]]] = {}
    for members in groups.values():
        trained = members[0]
        key = (trained.occluder_rule, trained.amodal)
        if key not in caches:
            caches[key] = cache_roi_features(detector, train_set, indices, cfg.jitter_per_gt, cfg.cache_seed, *key)
        if ("val", *key) not in caches:
            caches[("val", *key)] = cache_roi_features(detector, val_set, range(min(cfg.val_images, len(val_set))),
                                                       cfg.jitter_per_gt, cfg.cache_seed, *key)
        cache, val_cache = caches[key], caches[("val", *key)]
        if trained.mask_categories is not None:
            cache = cache.of_categories(trained.mask_categories)
            val_cache = val_cache.of_categories(trained.mask_categories)
        for seed in seeds:
            head = train_head(trained, cache, cfg.iters, cfg.batch_rois, cfg.lr, seed, cfg.channels,
                              cfg.optimizer, val_cache=val_cache, val_rois=cfg.val_rois, jitter_draw=cfg.jitter_draw)
            metrics, per_set = evaluate_head(head, trained.amodal, sets, inputs, cfg)
            common = {"config": trained.name, "head": trained.head, "amodal": trained.amodal, "seed": seed,
                      "params": count_parameters(head), "train_seconds": head.train_seconds,
                      "seconds_per_iter": head.train_seconds / cfg.iters, "final_loss": head.loss_curve[-1],
                      "loss_curve": head.loss_curve, "val_curve": head.val_curve,
                      "plateau_passed": head.plateau.passed, "plateau_improvement": head.plateau.improvement,
                      "plateau": head.plateau.as_dict(), **metrics}
            for variant in members:
                rows.setdefault(variant.name, []).append({"variant": variant.name, "label": variant.label, **common})
                if heads is not None:
                    heads[(variant.name, seed)] = head
                if results is not None:
                    results.update({(variant.name, seed, name): records for name, records in per_set.items()})
    return pd.DataFrame([row for name in dict.fromkeys(v.name for v in variants) for row in rows.get(name, [])])
