"""Detectors hosting a swappable ROI mask head: Faster R-CNN + FPN and FCOS + FPN.

Both keep torchvision's contract: ``model(images, targets)`` returns a loss dict in training and
a list of dicts (``boxes, labels, scores, masks`` plus ``occluder_masks``, ``occludee_contours``,
``occluder_contours`` for bilayer heads, all pasted to image size) in evaluation. torchvision is
used as a dependency: its RPN, box head, FCOS head and losses are reused unchanged.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import FCOS, FasterRCNN
from torchvision.models.detection.roi_heads import RoIHeads, paste_masks_in_image
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import MultiScaleRoIAlign, box_iou

from instseg.models.backbones import build_backbone
from instseg.models.mask_branch import OUTPUT_KEYS, RoIMaskBranch
from instseg.models.mask_heads import build_mask_head
from instseg.models.mask_heads.maskx import WeightTransferMaskHead

EXTRA_MAP_KEYS = tuple(v for v in OUTPUT_KEYS.values() if v != "masks")


class InstanceTransform(GeneralizedRCNNTransform):
    """torchvision's transform, also resizing the targets' amodal masks and boxes with the image
    (torchvision resizes only ``masks`` and ``boxes``; the depth occluder rule reads amodal masks
    in the frame of ``masks``) and pasting the extra per-detection maps to image size."""

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None
               ) -> tuple[Tensor, dict[str, Tensor] | None]:
        original = image.shape[-2:]
        image, target = super().resize(image, target)
        if target is None:
            return image, target
        if "amodal_masks" in target:  # nearest, to the masks' size: what torchvision does to "masks"
            size = tuple(target["masks"].shape[-2:]) if "masks" in target else tuple(image.shape[-2:])
            amodal = target["amodal_masks"]
            if tuple(amodal.shape[-2:]) != size:
                target["amodal_masks"] = F.interpolate(amodal[:, None].float(), size=size)[:, 0].to(amodal.dtype)
        if "amodal_boxes" in target:
            target["amodal_boxes"] = resize_boxes(target["amodal_boxes"], original, image.shape[-2:])
        return image, target

    def postprocess(self, result: list[dict[str, Tensor]], image_shapes: list[tuple[int, int]],
                    original_image_sizes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
        result = super().postprocess(result, image_shapes, original_image_sizes)
        if self.training:
            return result
        for pred, size in zip(result, original_image_sizes):
            for key in EXTRA_MAP_KEYS:
                if key in pred:
                    pred[key] = paste_masks_in_image(pred[key], pred["boxes"], size)
        return result


def _instance_transform(old: GeneralizedRCNNTransform) -> InstanceTransform:
    return InstanceTransform(old.min_size, old.max_size, old.image_mean, old.image_std,
                             size_divisible=old.size_divisible, fixed_size=old.fixed_size)


class MaskRoIHeads(RoIHeads):
    """torchvision's box branch unchanged, then our mask branch on its positive samples."""

    def __init__(self, *args: Any, mask_branch: RoIMaskBranch, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mask_branch = mask_branch
        self._samples: tuple[list[Tensor], list[Tensor], list[Tensor]] | None = None

    def select_training_samples(self, proposals, targets):  # noqa: ANN001 - torchvision's signature
        proposals, matched_idxs, labels, regression_targets = super().select_training_samples(proposals, targets)
        self._samples = (proposals, matched_idxs, labels)
        return proposals, matched_idxs, labels, regression_targets

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes: list[tuple[int, int]],
                targets: list[dict[str, Tensor]] | None = None) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        result, losses = super().forward(features, proposals, image_shapes, targets)
        if self.training:
            sampled, matched, labels = self._samples
            self._samples = None
            positive = [torch.where(lab > 0)[0] for lab in labels]
            losses.update(self.mask_branch.losses(features, image_shapes, [p[k] for p, k in zip(sampled, positive)],
                                                  [m[k] for m, k in zip(matched, positive)], targets))
        else:
            self.mask_branch.predict(features, image_shapes, result)
        return result, losses


class FCOSInstance(nn.Module):
    """FCOS with a ROI mask head. FCOS has no proposals of its own, so in training the head sees
    FCOS's current detections (detached, score >= ``train_score_thresh``) plus the ground-truth
    boxes, matched to instances at IoU >= ``match_iou``; in evaluation it sees the detections."""

    def __init__(self, fcos: FCOS, mask_branch: RoIMaskBranch, train_score_thresh: float = 0.05,
                 match_iou: float = 0.5) -> None:
        super().__init__()
        self.fcos = fcos
        self.fcos.transform = _instance_transform(fcos.transform)
        self.mask_branch = mask_branch
        self.train_score_thresh = train_score_thresh
        self.match_iou = match_iou

    def _detections(self, head_outputs: dict[str, Tensor], anchors: list[Tensor], features: list[Tensor],
                    image_sizes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
        per_level = [x.size(2) * x.size(3) for x in features]
        split_outputs = {k: list(v.split(per_level, dim=1)) for k, v in head_outputs.items()}
        split_anchors = [list(a.split(per_level)) for a in anchors]
        return self.fcos.postprocess_detections(split_outputs, split_anchors, image_sizes)

    def _training_rois(self, detections: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]
                       ) -> tuple[list[Tensor], list[Tensor]]:
        rois, matched = [], []
        for det, target in zip(detections, targets):
            boxes = torch.cat([det["boxes"][det["scores"] >= self.train_score_thresh].detach(), target["boxes"]])
            if len(target["boxes"]) == 0:
                rois.append(boxes[:0])
                matched.append(torch.zeros(0, dtype=torch.long, device=boxes.device))
                continue
            iou, idx = box_iou(boxes, target["boxes"]).max(dim=1)
            keep = iou >= self.match_iou
            rois.append(boxes[keep])
            matched.append(idx[keep])
        return rois, matched

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
                ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if self.training and targets is None:
            raise ValueError("targets are needed in training mode")
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        image_list, targets = self.fcos.transform(images, targets)
        features = self.fcos.backbone(image_list.tensors)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        levels = list(features.values())
        head_outputs = self.fcos.head(levels)
        anchors = self.fcos.anchor_generator(image_list, levels)
        if self.training:
            per_level = [x.size(2) * x.size(3) for x in levels]
            losses = self.fcos.compute_loss(targets, head_outputs, anchors, per_level)
            with torch.no_grad():
                detections = self._detections({k: v.detach() for k, v in head_outputs.items()}, anchors, levels,
                                              image_list.image_sizes)
            rois, matched = self._training_rois(detections, targets)
            losses.update(self.mask_branch.losses(features, image_list.image_sizes, rois, matched, targets))
            return losses
        detections = self._detections(head_outputs, anchors, levels, image_list.image_sizes)
        self.mask_branch.predict(features, image_list.image_sizes, detections)
        return self.fcos.transform.postprocess(detections, image_list.image_sizes, original_sizes)


def _narrow_group_norms(module: nn.Module) -> None:
    """FCOS's head hard-codes GroupNorm(32): at narrow FPN widths that is one channel per group,
    which fails on the 1x1 P7 of small images. Keep at least four channels per group."""
    for name, child in module.named_children():
        if isinstance(child, nn.GroupNorm):
            channels = child.num_channels
            setattr(module, name, nn.GroupNorm(min(child.num_groups, max(channels // 4, 1)), channels))
        else:
            _narrow_group_norms(child)


def _mask_branch(head: str, head_kwargs: dict[str, Any], featmap_names: list[str], num_classes: int,
                 occluder_rule: str, max_rois_per_image: int | None, in_channels: int,
                 mask_labels: list[int] | None) -> RoIMaskBranch:
    kwargs = dict(head_kwargs)
    class_specific = bool(kwargs.pop("class_specific", False))
    if class_specific:
        kwargs["num_classes"] = num_classes
    module = build_mask_head(head, in_channels=in_channels, **kwargs)
    pool = MultiScaleRoIAlign(featmap_names=featmap_names, output_size=14, sampling_ratio=2)
    return RoIMaskBranch(module, pool, occluder_rule=occluder_rule, max_rois_per_image=max_rois_per_image,
                         class_specific=class_specific, mask_labels=mask_labels)


def build_detector(detector: str, num_classes: int, mask_head: str = "bcnet", head_kwargs: dict[str, Any] | None = None,
                   backbone: str = "resnet18", norm: str = "group", fpn_channels: int = 256,
                   weights_path: str | None = None, min_size: int = 128, max_size: int = 128,
                   occluder_rule: str = "reference", max_rois_per_image: int | None = None,
                   mask_labels: list[int] | None = None, **detector_kwargs: Any) -> nn.Module:
    """A detector (``frcnn`` or ``fcos``) with the mask head ``mask_head``.

    ``num_classes`` counts object categories only (the background is added here).
    ``detector_kwargs`` go to torchvision's FasterRCNN / FCOS (e.g. ``rpn_batch_size_per_image``,
    ``box_detections_per_img``, ``score_thresh``). ``mask_labels`` (partial supervision): the
    labels whose instance masks train the mask head (None: all); boxes train on every label.
    """
    head_kwargs = head_kwargs or {}
    if detector == "frcnn":
        body = build_backbone(backbone, norm, fpn_channels, weights_path=weights_path, extra_levels="pool")
        model = FasterRCNN(body, num_classes=num_classes + 1, min_size=min_size, max_size=max_size, **detector_kwargs)
        old = model.roi_heads
        branch = _mask_branch(mask_head, head_kwargs, ["0", "1", "2", "3"], num_classes + 1, occluder_rule,
                              max_rois_per_image, fpn_channels, mask_labels)
        model.roi_heads = MaskRoIHeads(
            old.box_roi_pool, old.box_head, old.box_predictor, 0.5, 0.5,
            old.fg_bg_sampler.batch_size_per_image, old.fg_bg_sampler.positive_fraction, (10.0, 10.0, 5.0, 5.0),
            old.score_thresh, old.nms_thresh, old.detections_per_img, mask_branch=branch)
        model.roi_heads.proposal_matcher = old.proposal_matcher
        model.roi_heads.box_coder = old.box_coder
        model.transform = _instance_transform(model.transform)
        return model
    if detector == "fcos":
        body = build_backbone(backbone, norm, fpn_channels, weights_path=weights_path, extra_levels="p6p7")
        fcos = FCOS(body, num_classes=num_classes + 1, min_size=min_size, max_size=max_size, **detector_kwargs)
        _narrow_group_norms(fcos.head)
        branch = _mask_branch(mask_head, head_kwargs, ["0", "1", "2"], num_classes + 1, occluder_rule,
                              max_rois_per_image, fpn_channels, mask_labels)
        return FCOSInstance(fcos, branch)
    raise ValueError(f"unknown detector {detector!r}; choose 'frcnn' or 'fcos'")


def detector_parts(detector: nn.Module) -> tuple[nn.Module, nn.Module, MultiScaleRoIAlign]:
    """(transform, backbone, mask-branch ROI pooler) of a Faster R-CNN or FCOS detector built here:
    what a head trained on the frozen detector's features needs to see them as its mask branch did."""
    if hasattr(detector, "roi_heads"):
        return detector.transform, detector.backbone, detector.roi_heads.mask_branch.roi_pool
    return detector.fcos.transform, detector.fcos.backbone, detector.mask_branch.roi_pool


def mask_branch_of(detector: nn.Module) -> RoIMaskBranch:
    """The ROI mask branch of a Faster R-CNN or FCOS detector built here."""
    return detector.roi_heads.mask_branch if hasattr(detector, "roi_heads") else detector.mask_branch


def with_head(detector: nn.Module, head: nn.Module) -> nn.Module:
    """A copy of ``detector`` whose mask branch runs ``head``, so a head trained on the frozen
    features predicts end to end, extra outputs (``occluder_masks``, contours) pasted to image size
    like ``masks``. The weight-transfer head gets the detections' labels; the others are
    class-agnostic."""
    model = copy.deepcopy(detector)
    branch = mask_branch_of(model)
    branch.head, branch.class_specific = copy.deepcopy(head), isinstance(head, WeightTransferMaskHead)
    return model.eval()
