"""Swappable ROI mask heads, selected by name from one registry (``MASK_HEADS``), so configs can
run the Table 3.3 ablation and every other head table.

Every head maps ROI features [R, C, 14, 14] (and optional labels [R]) to a dict of 28x28 logits
with at least "mask", and has ``loss(outputs, targets)`` returning named loss terms. Targets come
from ``mask_head_targets`` (instance masks and boxes, no offline preprocessing).

Two conventions keep heads interchangeable:

* **detector-derived inputs** (MaskX's class embeddings, read from the frozen detector's box
  predictor) are not hyperparameters: a head class lists them in ``detector_inputs`` and derives
  them in ``inputs_from_detector(detector)``; ``build_mask_head(..., detector=...)`` passes them at
  build time, and :func:`head_hyperparameters` (what a config is keyed by) leaves them out;
* **extra maps** (BCNet's occluder mask and contours, ORCNN's visible and occlusion masks) are
  computed in training, where the losses need them, but at inference only when asked: a head
  lists them in ``optional_maps`` and takes ``forward(..., return_maps=True)``; call heads through
  :func:`run_head` to ask any head for them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from torch import Tensor, nn

from instseg.models.mask_heads.bcnet import REFERENCE_LOSS_WEIGHTS, BilayerMaskHead, bilayer_mask_loss
from instseg.models.mask_heads.cpmask import CPMASK_LOSS_WEIGHTS, CPMaskHead, affinity_loss, cpmask_loss
from instseg.models.mask_heads.fcn import (
    NONLOCAL_AFTER,
    FCNMaskHead,
    mask_head_loss,
    mask_probabilities,
    output_probabilities,
)
from instseg.models.mask_heads.maskx import WeightTransferMaskHead, box_predictor_embeddings
from instseg.models.mask_heads.orcnn import ORCNN_LOSS_WEIGHTS, OcclusionRCNNHead, orcnn_loss
from instseg.models.mask_heads.targets import mask_head_targets, occlusion_targets, select_instances

MASK_HEADS: dict[str, Callable[..., nn.Module]] = {
    "fcn": FCNMaskHead,  # Mask R-CNN; Table 3.3 "single layer, FCN"; AmodalMRCNN on amodal masks
    "gcn": partial(FCNMaskHead, nonlocal_after=NONLOCAL_AFTER),  # "single layer, GCN"
    "bilayer_fcn": partial(BilayerMaskHead, block="fcn"),  # "bilayer, FCN"
    "bcnet": partial(BilayerMaskHead, block="gcn"),  # "bilayer, GCN" = BCNet
    "cpmask": CPMaskHead,  # boundary + affinity parsing (chapter 4)
    "orcnn": OcclusionRCNNHead,  # amodal + visible heads, occlusion mask from both (Table 3.5)
    "maskx": WeightTransferMaskHead,  # MaskX weight transfer from the detector's box weights (Table 4.1)
}
# constructor arguments that are not hyperparameters of any head
_SIZE_ARGUMENTS = ("in_channels",)


def _head_class(name: str) -> Callable[..., nn.Module]:
    if name not in MASK_HEADS:
        raise ValueError(f"unknown mask head {name!r}; choose one of {sorted(MASK_HEADS)}")
    factory = MASK_HEADS[name]
    return getattr(factory, "func", factory)


def detector_input_names(name: str) -> tuple[str, ...]:
    """Constructor arguments the head ``name`` derives from the frozen detector (none for most)."""
    return tuple(getattr(_head_class(name), "detector_inputs", ()))


def detector_inputs(name: str, detector: nn.Module) -> dict[str, Any]:
    """What the head ``name`` reads from ``detector`` at build time (``{}`` for heads that read
    nothing), e.g. MaskX's ``class_embeddings``."""
    cls = _head_class(name)
    return dict(cls.inputs_from_detector(detector)) if detector_input_names(name) else {}


def build_mask_head(name: str, in_channels: int, conv_channels: int = 256, detector: nn.Module | None = None,
                    **kwargs: Any) -> nn.Module:
    """The head registered as ``name``, ``conv_channels`` wide, with hyperparameters ``kwargs``.

    Heads with detector-derived inputs (``detector_input_names``) read them from ``detector``
    here; passing those inputs in ``kwargs`` instead also works (e.g. a head restored without
    its detector)."""
    needed = detector_input_names(name)  # an unknown name fails here
    factory = MASK_HEADS[name]
    inputs = detector_inputs(name, detector) if detector is not None else {}
    clash = set(inputs) & set(kwargs)
    if clash:
        raise ValueError(f"mask head {name!r}: {sorted(clash)} given both directly and through the detector")
    missing = [key for key in needed if key not in inputs and key not in kwargs]
    if missing:
        raise ValueError(f"mask head {name!r} derives {missing} from the frozen detector: pass detector=")
    return factory(in_channels=in_channels, conv_channels=conv_channels, **inputs, **kwargs)


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (tuple, list)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def head_hyperparameters(name: str, kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every hyperparameter of the head ``name`` built with ``kwargs``, defaults filled in (the
    registry's presets included, e.g. ``block="gcn"`` for "bcnet"), without ``in_channels`` and
    the detector-derived inputs: what a trained configuration depends on besides its data and
    detector. Values must be plain (numbers, strings, booleans, None and containers of them)."""
    derived = set(detector_input_names(name))  # an unknown name fails here
    factory = MASK_HEADS[name]
    kwargs = dict(kwargs or {})
    for key, value in kwargs.items():
        if key in derived:
            raise ValueError(f"mask head {name!r}: {key!r} is derived from the frozen detector, not a hyperparameter; "
                             "give the head its detector at build time")
        if not _is_plain(value):
            raise ValueError(f"mask head {name!r}: hyperparameter {key!r} is a {type(value).__name__}, not a plain "
                             "value; tensors and modules are build-time inputs, not hyperparameters")
    bound = inspect.signature(factory).bind_partial(**kwargs)
    bound.apply_defaults()
    return {key: value for key, value in bound.arguments.items() if key not in derived and key not in _SIZE_ARGUMENTS}


def run_head(head: nn.Module, roi_features: Tensor, labels: Tensor | None = None,
             return_maps: bool = False) -> dict[str, Tensor]:
    """``head``'s outputs on ``roi_features``; with ``return_maps``, heads with ``optional_maps``
    also compute those at inference (heads without them ignore the request)."""
    if return_maps and getattr(head, "optional_maps", ()):
        return head(roi_features, labels, return_maps=True)
    return head(roi_features, labels)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (BN running statistics are buffers, not counted)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = [
    "CPMASK_LOSS_WEIGHTS", "MASK_HEADS", "ORCNN_LOSS_WEIGHTS", "REFERENCE_LOSS_WEIGHTS", "BilayerMaskHead",
    "CPMaskHead", "FCNMaskHead", "OcclusionRCNNHead", "WeightTransferMaskHead",
    "affinity_loss", "bilayer_mask_loss", "box_predictor_embeddings", "build_mask_head", "count_parameters",
    "cpmask_loss", "detector_input_names", "detector_inputs", "head_hyperparameters", "mask_head_loss",
    "mask_head_targets", "mask_probabilities", "occlusion_targets", "orcnn_loss", "output_probabilities", "run_head",
    "select_instances",
]
