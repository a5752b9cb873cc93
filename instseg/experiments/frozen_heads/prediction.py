"""Masks of a trained head on fixed detections, and their scores.

Why: every head of a run is evaluated on the same detections of the same detector, computed once
(:func:`detector_detections`, or ground-truth boxes: :func:`gt_detections`), on backbone features
computed once (:func:`image_features`), so AP differences between heads come from their masks
alone (:func:`predict_masks`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import paste_masks_in_image

from instseg.data.dataset import CocoInstanceDataset
from instseg.evaluation import ap_by_occlusion, evaluate
from instseg.experiments.frozen_heads.roi_cache import (
    BACKBONE_BATCH,
    HEAD_BATCH,
    BackboneOutput,
    backbone_passes,
    pool_boxes,
)
from instseg.models.detectors import detector_parts
from instseg.models.inference import detections_to_coco, predict_batches
from instseg.models.mask_heads import mask_probabilities

PREDICT_IMAGES = 32  # images whose ROIs go through the head together in evaluation
SEGM_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # what score() reads of the COCO evaluation


@dataclass
class ImageFeatures:
    """The frozen backbone's pooler levels of every image of a split (float16, one dict per image),
    computed once and reused by every head's evaluation."""

    items: list[BackboneOutput]

    @property
    def nbytes(self) -> int:
        """Memory held by the feature maps."""
        return sum(t.numel() * t.element_size() for item in self.items for t in item.levels.values())


def image_features(detector: nn.Module, dataset: CocoInstanceDataset) -> ImageFeatures:
    """Backbone features of every image of ``dataset`` (see :class:`ImageFeatures`)."""
    items = []
    for item in backbone_passes(detector, dataset, range(len(dataset))):
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
        pooled = torch.cat([pool_boxes(pool, item, det["boxes"]) for item, det in zip(items, dets)])
        labels = torch.cat([det["labels"] for det in dets])
        probabilities = _mask_probabilities(head, pooled, labels).split([len(d["boxes"]) for d in dets])
        for item, det, probs in zip(items, dets, probabilities):
            masks = paste_masks_in_image(probs, det["boxes"], item.original)
            pred = {"boxes": det["boxes"], "labels": det["labels"], "scores": det["scores"], "masks": masks}
            records += detections_to_coco(pred, item.target["image_id"], label_to_category_id, mask_threshold)
    return records


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


@dataclass(frozen=True)
class EvalSet:
    """Ground truth (a COCO dict) and the dataset over the same images; ``image_ids`` scores a
    subset (e.g. COCO-OCC inside val) without predicting it again."""

    gt: dict
    dataset: CocoInstanceDataset
    image_ids: Sequence[int] | None = None
    category_ids: Sequence[int] | None = None  # score these categories only (e.g. the novel ones)


def score(eval_set: EvalSet, results: list[dict], amodal: bool,
          bins: Sequence[tuple[float, float]] | None) -> dict[str, float | None]:
    """Segm AP, AP50, AP75, APs, APm, APl (percent) of ``results`` on ``eval_set`` and, with
    ``bins``, AP per occlusion bin as ``AP_occ_{lo}_{hi}``: one set's metrics by name."""
    kwargs = {"amodal": amodal, "image_ids": eval_set.image_ids}
    metrics = evaluate(eval_set.gt, results, "segm", category_ids=eval_set.category_ids, **kwargs)
    row = {k: metrics[k] for k in SEGM_METRICS}
    if bins and eval_set.category_ids is not None:
        raise ValueError("AP by occlusion bin over a category subset is not supported")
    for b in ap_by_occlusion(eval_set.gt, results, bins, "segm", **kwargs) if bins else []:
        row[f"AP_occ_{b['bin'][0]:g}_{b['bin'][1]:g}"] = b["AP"]
    return row


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
        """``dataset``'s backbone features, from one pass however many heads read them."""
        if id(dataset) not in self._features:
            self._features[id(dataset)] = image_features(self.detector, dataset)
        return self._features[id(dataset)]

    def detections(self, dataset: CocoInstanceDataset, amodal: bool) -> list[dict[str, Tensor]]:
        """The boxes every head is scored on: the detector's (one pass), or the ground truth's
        (amodal boxes for amodal heads)."""
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


@dataclass
class HeadEvaluation:
    """One head's masks on every eval set: metrics per set (:func:`score`), the COCO results they
    came from (for paired statistics) and the time spent predicting and scoring."""

    scores: dict[str, dict[str, float | None]]  # set name -> metric -> value
    results: dict[str, list[dict]]  # set name -> COCO results
    predict_seconds: float
    eval_seconds: float


def evaluate_head(head: nn.Module, amodal: bool, eval_sets: Mapping[str, EvalSet], inputs: EvalInputs,
                  bins: Sequence[tuple[float, float]] | None) -> HeadEvaluation:
    """Predict once per dataset, score every eval set on it (with AP per occlusion bin of
    ``bins``): sets over the same images share one prediction pass."""
    datasets = {id(es.dataset): es.dataset for es in eval_sets.values()}
    prepared = {key: (detections_of_categories(inputs.detections(ds, amodal), ds, _scored_categories(eval_sets, key)),
                      inputs.features(ds)) for key, ds in datasets.items()}
    start = time.perf_counter()
    predictions = {key: predict_masks(inputs.detector, head, datasets[key], *prepared[key]) for key in datasets}
    predict_seconds = time.perf_counter() - start
    start = time.perf_counter()
    results = {name: predictions[id(es.dataset)] for name, es in eval_sets.items()}
    scores = {name: score(eval_set, results[name], amodal, bins) for name, eval_set in eval_sets.items()}
    return HeadEvaluation(scores, results, predict_seconds, time.perf_counter() - start)
