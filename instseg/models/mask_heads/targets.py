"""Per-ROI training targets for the mask heads, built from instance masks and boxes on the fly.

BCNet's reference code reads occluder masks precomputed offline; computing them here lets any
COCO-style dataset train every head. The caller loops over images (as torchvision does) and
concatenates the per-image dicts.

Projection uses ``roi_align`` like torchvision's ``project_masks_on_boxes`` but with
``aligned=True`` (detectron2's choice): box coordinates are pixel edges (pixel k covers [k, k+1]),
so a box of at least M px that exactly covers a mask yields an all-ones target; torchvision's
``aligned=False`` samples half a pixel off and loses the far corner of such a box. (Boxes under
M px are upsampled bilinearly, which rounds the target's corners in either convention.) Projected values are
binarised at 0.5; boundaries are computed afterwards on the binary M x M maps, as the reference
does at 28 x 28.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torchvision.ops import roi_align

from instseg.data.occlusion import boundary_targets, occluder_masks_depth, occluder_masks_reference

OCCLUDER_RULES = ("reference", "depth", "none")
# Per-instance entries of a dataset target (first dimension N); "occluded_by" is [N, N].
INSTANCE_KEYS = ("boxes", "labels", "masks", "iscrowd", "area", "annotation_ids", "amodal_masks", "amodal_boxes",
                 "occlusion_ratio", "depth")


def select_instances(target: Mapping[str, Any], keep: Tensor) -> dict[str, Any]:
    """The target restricted to the instances ``keep`` (bool [N]); image-level entries are kept.

    Partial supervision builds mask targets from this subset, so the masks of the other
    (novel-category) instances reach neither the mask targets nor the occluder targets.
    """
    out = {key: (value[keep] if key in INSTANCE_KEYS else value) for key, value in target.items()}
    if "occluded_by" in target:
        out["occluded_by"] = target["occluded_by"][keep][:, keep]
    return out


def project_masks_on_boxes(masks: Tensor, boxes: Tensor, matched_idxs: Tensor, resolution: int) -> Tensor:
    """Crop ``masks[matched_idxs[r]]`` ([N, K, H, W]) to ``boxes[r]`` and resample it to
    ``resolution``; returns soft values [R, K, M, M] (aligned RoIAlign, see module docstring)."""
    rois = torch.cat([matched_idxs[:, None].to(boxes.dtype), boxes], dim=1)
    return roi_align(masks.to(boxes.dtype), rois, (resolution, resolution), 1.0, aligned=True)


def mask_head_targets(gt_masks: Tensor, gt_boxes: Tensor, proposals: Tensor, matched_idxs: Tensor,
                      resolution: int = 28, occluder: str = "reference", depth: Tensor | None = None,
                      amodal_masks: Tensor | None = None) -> dict[str, Tensor]:
    """Float 0/1 targets [R, M, M] for one image's positive proposals.

    ``gt_masks`` [N, H, W] are visible masks, ``gt_boxes`` [N, 4] xyxy, ``proposals`` [R, 4] xyxy,
    ``matched_idxs`` [R] the instance each proposal was matched to. Keys: "mask", "boundary" and,
    unless ``occluder="none"``, "occluder_mask", "occluder_boundary". ``occluder`` picks the rule:
    "reference" (BCNet's: other instances whose box IoU > 0.05, inside this box), or "depth"
    (instances in front by ``depth``, larger = closer; see ``occluder_masks_depth``). The depth
    rule is exact only with ``amodal_masks`` [N, H, W]: without them the instance's box stands in
    for its amodal mask, so a closer object inside the box counts even if it does not touch the
    instance (approximate). Training code calls :func:`image_mask_targets`, which passes them.
    With "none" the occluder keys are absent, so a head that predicts occluders fails loudly.
    """
    if occluder not in OCCLUDER_RULES:
        raise ValueError(f"occluder must be one of {OCCLUDER_RULES}, not {occluder!r}")
    if occluder == "depth" and depth is None:
        raise ValueError('occluder="depth" needs the instances\' depth order')
    keys = ("mask", "boundary") if occluder == "none" else (
        "mask", "boundary", "occluder_mask", "occluder_boundary")
    if proposals.shape[0] == 0:
        return {key: proposals.new_zeros((0, resolution, resolution)) for key in keys}
    masks = gt_masks.bool()
    maps = [masks]
    if occluder == "reference":
        maps.append(occluder_masks_reference(masks, gt_boxes))
    elif occluder == "depth":
        maps.append(occluder_masks_depth(masks, depth, amodal_masks=amodal_masks, boxes=gt_boxes))
    binary = project_masks_on_boxes(torch.stack(maps, dim=1), proposals, matched_idxs, resolution) >= 0.5
    targets = {"mask": binary[:, 0], "boundary": boundary_targets(binary[:, 0])}
    if occluder != "none":
        targets |= {"occluder_mask": binary[:, 1], "occluder_boundary": boundary_targets(binary[:, 1])}
    return {key: target.float() for key, target in targets.items()}


def resolve_occluder_rule(rule: str, target: Mapping[str, Any]) -> str:
    """The rule ``"auto"`` stands for on this target: "depth" when it carries a depth order, else
    BCNet's "reference" box rule (any COCO data); other rules are returned as they are."""
    if rule == "auto":
        return "depth" if "depth" in target else "reference"
    return rule


def image_mask_targets(target: Mapping[str, Any], proposals: Tensor, matched_idxs: Tensor, occluder_rule: str,
                       boxes: Tensor | None = None, resolution: int = 28) -> dict[str, Tensor]:
    """:func:`mask_head_targets` of one image's target dict: the one call both training paths make
    (the detectors' mask branch and the frozen-detector ROI cache), so they build the same targets.

    Why: the occluder rule needs more of the target than masks and boxes. "auto" is resolved here,
    and the depth rule gets the ``depth`` order and, when the data carries them, the
    ``amodal_masks``, which make its occluders exact (without them it falls back to the box region,
    approximate). ``boxes`` are the instances' boxes (default ``target["boxes"]``; amodal training
    passes ``target["amodal_boxes"]``). Amodal masks must be in the frame of ``target["masks"]``:
    the detectors' transform resizes both (torchvision's resizes only ``masks``).
    """
    rule = resolve_occluder_rule(occluder_rule, target)
    amodal = target.get("amodal_masks") if rule == "depth" else None
    if amodal is not None and amodal.shape != target["masks"].shape:
        raise ValueError(f"amodal_masks {tuple(amodal.shape)} and masks {tuple(target['masks'].shape)} differ: "
                         "resize both with the image (InstanceTransform does)")
    return mask_head_targets(target["masks"], target["boxes"] if boxes is None else boxes, proposals, matched_idxs,
                             resolution=resolution, occluder=rule, depth=target.get("depth"), amodal_masks=amodal)


def occlusion_targets(amodal: Tensor, visible: Tensor) -> Tensor:
    """ORCNN's occlusion (invisible) target on the mask grid: amodal AND NOT visible, as float 0/1
    [R, M, M], from the projected amodal and visible targets of the same ROIs. (Projected
    separately, a visible pixel can fall just outside the amodal mask; it is simply not occluded.)"""
    if amodal.shape != visible.shape:
        raise ValueError(f"amodal targets {tuple(amodal.shape)} and visible targets {tuple(visible.shape)} differ")
    return (amodal.bool() & ~visible.bool()).to(amodal.dtype if amodal.is_floating_point() else torch.float32)
