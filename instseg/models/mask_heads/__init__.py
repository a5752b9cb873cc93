"""Swappable ROI mask heads, selected by name so configs can run the Table 3.3 ablation.

Every head maps ROI features [R, C, 14, 14] (and optional labels [R]) to a dict of 28x28 logits
with at least "mask", and has ``loss(outputs, targets)`` returning named loss terms. Targets come
from ``mask_head_targets`` (instance masks and boxes, no offline preprocessing).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from torch import nn

from instseg.models.mask_heads.bcnet import REFERENCE_LOSS_WEIGHTS, BilayerMaskHead, bilayer_mask_loss
from instseg.models.mask_heads.cpmask import CPMASK_LOSS_WEIGHTS, CPMaskHead, affinity_loss, cpmask_loss
from instseg.models.mask_heads.fcn import (
    NONLOCAL_AFTER,
    FCNMaskHead,
    mask_head_loss,
    mask_probabilities,
    output_probabilities,
)
from instseg.models.mask_heads.targets import mask_head_targets, select_instances

MASK_HEADS: dict[str, Callable[..., nn.Module]] = {
    "fcn": FCNMaskHead,  # Mask R-CNN; Table 3.3 "single layer, FCN"
    "gcn": partial(FCNMaskHead, nonlocal_after=NONLOCAL_AFTER),  # "single layer, GCN"
    "bilayer_fcn": partial(BilayerMaskHead, block="fcn"),  # "bilayer, FCN"
    "bcnet": partial(BilayerMaskHead, block="gcn"),  # "bilayer, GCN" = BCNet
    "cpmask": CPMaskHead,  # boundary + affinity parsing (chapter 4)
}


def build_mask_head(name: str, **kwargs: Any) -> nn.Module:
    """The head registered as ``name`` (see ``MASK_HEADS``), built with ``kwargs``."""
    if name not in MASK_HEADS:
        raise ValueError(f"unknown mask head {name!r}; choose one of {sorted(MASK_HEADS)}")
    return MASK_HEADS[name](**kwargs)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (BN running statistics are buffers, not counted)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = [
    "CPMASK_LOSS_WEIGHTS", "MASK_HEADS", "REFERENCE_LOSS_WEIGHTS", "BilayerMaskHead", "CPMaskHead", "FCNMaskHead",
    "affinity_loss", "bilayer_mask_loss", "cpmask_loss",
    "build_mask_head", "count_parameters", "mask_head_loss", "mask_head_targets",
    "mask_probabilities", "output_probabilities", "select_instances",
]
