"""ResNet-FPN backbones from torchvision, built without any download.

Trained from scratch (the CPU default) the backbone uses GroupNorm: torchvision's default
FrozenBatchNorm is an identity with random weights, and BatchNorm is unstable at the batch sizes
a CPU affords. With a local ImageNet weights file (``weights_path``) FrozenBatchNorm is the
usual choice, as in the paper's ResNet-50/101 models.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from instseg.errors import InputError

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
NORMS = ("group", "frozen_bn", "bn")


def _norm_layer(norm: str):
    if norm == "group":
        return lambda channels: nn.GroupNorm(min(32, channels // 4), channels)
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    if norm == "bn":
        return nn.BatchNorm2d
    raise ValueError(f"unknown norm {norm!r}; choose one of {NORMS}")


def build_backbone(name: str = "resnet18", norm: str = "group", fpn_channels: int = 256,
                   trainable_layers: int = 5, weights_path: str | Path | None = None,
                   extra_levels: str = "pool", returned_layers: list[int] | None = None) -> BackboneWithFPN:
    """ResNet + FPN. ``extra_levels``: "pool" (P6 by max-pool, Faster R-CNN) or "p6p7" (FCOS)."""
    if name not in RESNETS:
        raise ValueError(f"unknown backbone {name!r}; choose one of {RESNETS}")
    body = getattr(resnet, name)(weights=None, norm_layer=_norm_layer(norm))
    if weights_path is not None:
        path = Path(weights_path)
        if not path.is_file():
            raise InputError("backbone weights file not found", path)
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        missing, unexpected = body.load_state_dict(state, strict=False)
        loaded = len(body.state_dict()) - len(missing)
        if loaded == 0:
            raise InputError(f"no tensor in the file matches a {name} (unexpected keys: {list(unexpected)[:3]})", path)
    if extra_levels == "pool":
        extra = LastLevelMaxPool()
        returned_layers = returned_layers or [1, 2, 3, 4]
    elif extra_levels == "p6p7":
        extra = LastLevelP6P7(fpn_channels, fpn_channels)
        returned_layers = returned_layers or [2, 3, 4]
    else:
        raise ValueError(f"extra_levels must be 'pool' or 'p6p7', not {extra_levels!r}")
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    for param_name, param in body.named_parameters():
        if not any(param_name.startswith(layer) for layer in trainable) and not param_name.startswith("bn1"):
            param.requires_grad_(False)
    width = body.inplanes // 8  # channels of layer1 (64 for BasicBlock, 256 for Bottleneck)
    in_channels = [width * 2 ** (k - 1) for k in returned_layers]
    return_layers = {f"layer{k}": str(i) for i, k in enumerate(returned_layers)}
    return BackboneWithFPN(body, return_layers, in_channels, fpn_channels, extra_blocks=extra)
