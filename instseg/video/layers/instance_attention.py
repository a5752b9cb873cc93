"""PCAN's instance-level prototypical attention: foreground and background prototypes of a tracked
object fitted by masked EM on its ROI features, attention maps of the current ROI onto them, their
propagation along the tracklet (eq. 5.8), and the temporal segmentation head that refines the
coarse mask from features, maps and mask.

Prototype j of one frame corresponds to prototype j of the next because each frame's EM starts
from the propagated prototypes; that is what makes the momentum update of eq. 5.8 meaningful.
The two maps are the posterior mass of each ROI pixel on the foreground and on the background
prototypes under one joint mixture (eq. 5.3 over both sets): they sum to one where any prototype
exists. Variants of Table 5.7: ``momentum`` 1 is "no propagation" (the current frame's
prototypes only), 0 keeps the initial frame's.

Shapes: ROI features [R, C, S, S], coarse masks [R, S, S] (probabilities), prototypes [R, K, C].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from instseg.video.layers.prototypes import assign, em_prototypes


def instance_prototypes(features: Tensor, masks: Tensor, num_fg: int, num_bg: int, iters: int, temperature: float,
                        init: tuple[Tensor, Tensor] | None = None, threshold: float = 0.5,
                        grad_iters: int | None = None) -> tuple[Tensor, Tensor]:
    """(foreground [R, num_fg, C], background [R, num_bg, C]) prototypes: masked EM over the pixels
    inside (mask >= threshold) and outside the coarse mask. ``init``: the propagated prototypes;
    ``grad_iters``: see :func:`em_prototypes`."""
    points = features.flatten(2).transpose(1, 2)  # [R, S*S, C]
    inside = masks.flatten(1) >= threshold
    out = []
    for num, region, start in ((num_fg, inside, None if init is None else init[0]),
                               (num_bg, ~inside, None if init is None else init[1])):
        out.append(em_prototypes(points, num, iters, temperature, region, start, grad_iters)[0] if num else
                   points.new_zeros(points.shape[0], 0, points.shape[-1]))
    return out[0], out[1]


def attention_maps(features: Tensor, foreground: Tensor, background: Tensor, temperature: float) -> Tensor:
    """[R, 2, S, S]: each pixel's posterior mass on the foreground and the background prototypes."""
    r, _, s, _ = features.shape
    k_fg = foreground.shape[1]
    prototypes = torch.cat([foreground, background], dim=1)
    if prototypes.shape[1] == 0:
        return features.new_zeros(r, 2, s, s)
    posterior = assign(features.flatten(2).transpose(1, 2), prototypes, temperature)  # [R, S*S, K]
    maps = torch.stack([posterior[..., :k_fg].sum(-1), posterior[..., k_fg:].sum(-1)], dim=1)
    return maps.view(r, 2, s, s)


def propagate(previous: Tensor | None, current: Tensor, momentum: float) -> Tensor:
    """Eq. 5.8: (1 - momentum) * previous + momentum * current (the current ones on a tracklet's first frame)."""
    return current if previous is None else (1 - momentum) * previous + momentum * current


class TemporalSegmentationHead(nn.Module):
    """ROI features + foreground/background maps + coarse mask logits -> refined mask logits at
    twice the ROI size (3x3 convs, a 2x deconvolution, a 1x1 predictor)."""

    def __init__(self, channels: int, hidden: int = 64, convs: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels + 3, hidden, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(convs):
            layers += [nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(inplace=True)]
        self.tower = nn.Sequential(*layers)
        self.up = nn.ConvTranspose2d(hidden, hidden, 2, stride=2)
        self.predictor = nn.Conv2d(hidden, 1, 1)
        # Mask R-CNN's predictor init: near-zero logits, so a head used as a residual over the
        # detector's coarse mask (PCAN.refine) starts at that mask.
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, features: Tensor, maps: Tensor, coarse_logits: Tensor) -> Tensor:
        x = self.tower(torch.cat([features, maps, coarse_logits.unsqueeze(1)], dim=1))
        return self.predictor(torch.relu(self.up(x))).squeeze(1)
