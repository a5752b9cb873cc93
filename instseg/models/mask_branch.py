"""The ROI mask branch shared by both detectors: pool 14x14 features, run a swappable head,
build its targets from the instance masks, or turn its logits into per-detection maps.

Detectron2-style heads plug in here; torchvision's ``RoIHeads`` hard-codes ``maskrcnn_loss``
and a single logits tensor, so the detectors call this branch instead of its mask path.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import MultiScaleRoIAlign

from instseg.models.mask_heads import output_probabilities, run_head, select_instances
from instseg.models.mask_heads.targets import image_mask_targets

# head output key -> key of the pasted map in a detection dict (beside torchvision's "masks")
OUTPUT_KEYS: dict[str, str] = {
    "mask": "masks",
    "boundary": "occludee_contours",
    "occluder_mask": "occluder_masks",
    "occluder_boundary": "occluder_contours",
}


class RoIMaskBranch(nn.Module):
    """Pooler + mask head + target rule.

    ``occluder_rule``: "reference" (BCNet's box-IoU rule, works on any COCO data), "depth"
    (occluders in front by a ``depth`` target key; exact with ``amodal_masks`` in the targets,
    approximate without, see ``image_mask_targets``), "auto" (depth when the targets carry it,
    else reference) or "none" (heads without occluder outputs).
    ``max_rois_per_image`` caps the positive ROIs that train the head (a CPU budget knob).
    ``mask_labels`` (partial supervision): only proposals matched to instances of these labels
    train the head, and targets are built from those instances alone; None trains on all.
    ``return_maps``: at inference, also ask the head for its extra maps (occluder masks and
    contours), which the detection dicts then carry beside "masks"; on by default, since the
    detectors' output contract includes them; off, a bilayer head runs only its mask path.
    """

    def __init__(self, head: nn.Module, roi_pool: MultiScaleRoIAlign, occluder_rule: str = "reference",
                 max_rois_per_image: int | None = None, class_specific: bool = False,
                 mask_labels: list[int] | None = None, return_maps: bool = True) -> None:
        super().__init__()
        self.return_maps = return_maps
        self.head = head
        self.roi_pool = roi_pool
        self.occluder_rule = occluder_rule
        self.max_rois_per_image = max_rois_per_image
        self.class_specific = class_specific
        self.mask_labels = None if mask_labels is None else sorted(mask_labels)

    def _supervised(self, proposals: Tensor, matched: Tensor, target: dict[str, Tensor]
                    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Proposals of mask-supervised instances, re-indexed into the target of those alone."""
        if self.mask_labels is None:
            return proposals, matched, target
        keep = torch.isin(target["labels"], torch.tensor(self.mask_labels, device=target["labels"].device))
        new_index = torch.cumsum(keep, 0) - 1
        selected = keep[matched]
        return proposals[selected], new_index[matched[selected]], select_instances(target, keep)

    def _cap(self, proposals: Tensor, matched: Tensor) -> tuple[Tensor, Tensor]:
        if self.max_rois_per_image is None or len(proposals) <= self.max_rois_per_image:
            return proposals, matched
        keep = torch.randperm(len(proposals), device=proposals.device)[: self.max_rois_per_image]
        return proposals[keep], matched[keep]

    def losses(self, features: dict[str, Tensor], image_shapes: list[tuple[int, int]], proposals: list[Tensor],
               matched_idxs: list[Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Loss terms of the head on positive ``proposals`` matched to ``targets`` instances."""
        proposals, matched_idxs, targets = zip(*(self._supervised(p, m, t)
                                                 for p, m, t in zip(proposals, matched_idxs, targets)))
        rois, matched = zip(*(self._cap(p, m) for p, m in zip(proposals, matched_idxs)))
        per_image = []
        for boxes, idx, target in zip(rois, matched, targets):
            # the depth order and, where the data has them, amodal masks too (exact occluders)
            per_image.append(image_mask_targets(target, boxes, idx, self.occluder_rule))
        head_targets = {key: torch.cat([t[key] for t in per_image]) for key in per_image[0]}
        labels = torch.cat([t["labels"][idx] for t, idx in zip(targets, matched)]) if self.class_specific else None
        outputs = self.head(self.roi_pool(features, list(rois), image_shapes), labels)
        return self.head.loss(outputs, head_targets)

    def raw_outputs(self, features: dict[str, Tensor], image_shapes: list[tuple[int, int]],
                    detections: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Head logits for every detection box (all images concatenated), with the extra maps when
        ``return_maps``."""
        boxes = [d["boxes"] for d in detections]
        labels = torch.cat([d["labels"] for d in detections]) if self.class_specific else None
        return run_head(self.head, self.roi_pool(features, boxes, image_shapes), labels, self.return_maps)

    def predict(self, features: dict[str, Tensor], image_shapes: list[tuple[int, int]],
                detections: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
        """Add 28x28 probability maps ("masks" and, for bilayer heads, the extra layers). Outputs
        without a detection key in ``OUTPUT_KEYS`` (ORCNN's visible and occlusion masks) stay out of
        the detection dicts, which the detectors paste to image size by those keys."""
        probabilities = output_probabilities(self.raw_outputs(features, image_shapes, detections))
        counts = [len(d["boxes"]) for d in detections]
        for key, probs in probabilities.items():
            if key not in OUTPUT_KEYS:
                continue
            for detection, chunk in zip(detections, probs.split(counts)):
                detection[OUTPUT_KEYS[key]] = chunk
        return detections
