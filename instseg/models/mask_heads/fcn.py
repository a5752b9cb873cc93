"""Mask R-CNN's FCN mask head, its single-layer GCN variant, and the parts every mask head shares.

Heads map ROI features [R, C, 14, 14] to a dict of 28x28 logits, so a detector can swap heads by
name and a loss can be computed from dicts alone (detectron2's head/loss split, torchvision's
tensors-and-dicts style). The loss is a pure function of (outputs, targets).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.layers import NonLocalBlock

# The reference BCNet code puts its non-local block after the 2nd of four convs.
NONLOCAL_AFTER = 2


def msra_init(module: nn.Conv2d | nn.ConvTranspose2d) -> None:
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class ConvTower(nn.Sequential):
    """``num_convs`` 3x3 conv + ReLU layers, with a non-local block after conv ``nonlocal_after``
    (1-based; None for a plain FCN tower). ``out_channels`` is the width it produces."""

    def __init__(self, in_channels: int, channels: int, num_convs: int,
                 nonlocal_after: int | None = None) -> None:
        if nonlocal_after is not None and not 1 <= nonlocal_after <= num_convs:
            raise ValueError(f"nonlocal_after={nonlocal_after} must lie in 1..num_convs={num_convs}")
        layers: list[nn.Module] = []
        for k in range(num_convs):
            conv = nn.Conv2d(in_channels if k == 0 else channels, channels, 3, padding=1)
            msra_init(conv)
            layers += [conv, nn.ReLU(inplace=True)]
            if k + 1 == nonlocal_after:
                layers.append(NonLocalBlock(channels))
        super().__init__(*layers)
        self.out_channels = channels if num_convs else in_channels


class UpsamplePredictor(nn.Module):
    """2x2 stride-2 deconv + ReLU (14 -> 28), then a 1x1 conv to ``out_channels`` logit maps."""

    def __init__(self, channels: int, out_channels: int = 1) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(channels, channels, 2, stride=2)
        self.predictor = nn.Conv2d(channels, out_channels, 1)
        msra_init(self.deconv)
        # Small predictor weights start every pixel near p=0.5, as in Mask R-CNN.
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.predictor(F.relu(self.deconv(x)))


class FCNMaskHead(nn.Module):
    """Mask R-CNN mask head: ``num_convs`` 3x3 convs, deconv, 1x1 predictor.

    Class-agnostic when ``num_classes`` is None; otherwise it predicts ``num_classes`` maps and
    ``forward`` returns the channel ``labels`` selects (labels index channels directly, so with
    torchvision's labels, which start at 1, pass num_classes including the background).
    ``nonlocal_after=2`` gives the single-layer GCN head of Table 3.3.
    """

    def __init__(self, in_channels: int, conv_channels: int = 256, num_convs: int = 4,
                 num_classes: int | None = None, nonlocal_after: int | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.tower = ConvTower(in_channels, conv_channels, num_convs, nonlocal_after)
        self.predictor = UpsamplePredictor(self.tower.out_channels, num_classes or 1)

    def forward(self, roi_features: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        """ROI features [R, C, 14, 14] -> {"mask": logits [R, 1, 28, 28]}."""
        logits = self.predictor(self.tower(roi_features))
        if self.num_classes is not None:
            if labels is None:
                raise ValueError("a class-specific mask head needs the ROIs' labels")
            logits = logits[torch.arange(logits.shape[0], device=logits.device), labels][:, None]
        return {"mask": logits}

    def loss(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """{"loss_mask": BCE} (see ``mask_head_loss``)."""
        return mask_head_loss(outputs, targets)


def mask_head_loss(outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor],
                   weights: Mapping[str, float] | None = None) -> dict[str, Tensor]:
    """Mean per-pixel BCE for every output a head produced, named ``loss_<key>``.

    ``outputs[key]`` are logits [R, 1, M, M] and ``targets[key]`` 0/1 maps [R, M, M]; terms a head
    does not output are absent, so disabled branches cost nothing. ``weights[key]`` scales a term
    (default 1). With R = 0 a term is ``logits.sum() * 0``: zero, yet connected to the parameters
    (BCE's mean over nothing would be NaN).
    """
    losses = {}
    for key, logits in outputs.items():
        if key not in targets:
            raise KeyError(f"no target for mask head output {key!r}; targets have {sorted(targets)}")
        if logits.shape[0] == 0:
            term = logits.sum() * 0
        else:
            term = F.binary_cross_entropy_with_logits(logits[:, 0], targets[key].to(logits.dtype))
        losses[f"loss_{key}"] = term * (1.0 if weights is None else weights[key])
    return losses


def mask_probabilities(outputs: Mapping[str, Tensor]) -> Tensor:
    """Foreground probabilities [R, 1, 28, 28] of the (occludee) mask, for pasting into images."""
    return outputs["mask"].sigmoid()


def output_probabilities(outputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Probabilities of every output (bilayer heads add boundary and occluder maps) by key."""
    return {key: logits.sigmoid() for key, logits in outputs.items()}
