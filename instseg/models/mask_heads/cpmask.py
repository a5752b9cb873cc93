"""CPMask's commonality-parsing mask head (thesis section 4.2) with its ablation switches.

* Boundary-Parsing Module (eq. 4.1): four 3x3 convs, deconv, 1x1 conv -> instance boundary logits,
  trained with BCE. Its 14x14 features are added to the ROI features (X + F_B(X), eq. 4.2), so
  its tower is as wide as the ROI features.
* Basic mask head G (eq. 4.2): four 3x3 convs on the fused features -> C.
* Non-local Affinity-Parsing unit (eqs. 4.3-4.5): 1x1 embeddings theta(C), phi(C), each z-scored
  per pixel over its channels, dot products scaled by d^-1/2, row softmax -> affinity A
  [R, hw, hw]; the coordinated features C~ = A g(C).
* Prediction (eq. 4.6): deconv + 1x1 conv on C~ + C.

Losses (weights from the anchors' reference facts): mask BCE x1, boundary BCE x0.5, affinity
x0.5. The affinity loss (eq. 4.4) asks each foreground row of A to put mass 1 on foreground
columns and 0 on background columns, with the ground-truth mask pooled to the 14x14 grid.

Where the thesis is silent we chose: the d^-1/2 scaling of the z-scored dot product (without it
the 64-256-dimensional products make the softmax one-hot at initialisation), and the average of
eq. 4.4 over the foreground rows of all ROIs (ROIs without foreground add nothing).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.models.mask_heads.fcn import ConvTower, UpsamplePredictor, msra_init, mask_head_loss

CPMASK_LOSS_WEIGHTS: dict[str, float] = {"mask": 1.0, "boundary": 0.5, "affinity": 0.5}


def zscore(x: Tensor, dim: int = 1, eps: float = 1e-5) -> Tensor:
    """``(x - mean) / std`` along ``dim`` (population std; ``eps`` keeps constant vectors finite)."""
    centred = x - x.mean(dim, keepdim=True)
    return centred / torch.sqrt(centred.square().mean(dim, keepdim=True) + eps)


class BoundaryParsingModule(nn.Module):
    """Shape commonality: features F_B(X) (same width as X, for the fusion) and boundary logits."""

    def __init__(self, channels: int, num_convs: int = 4) -> None:
        super().__init__()
        self.tower = ConvTower(channels, channels, num_convs)
        self.predictor = UpsamplePredictor(channels)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """[R, C, h, w] -> (features [R, C, h, w], boundary logits [R, 1, 2h, 2w])."""
        features = self.tower(x)
        return features, self.predictor(features)


class AffinityParsingUnit(nn.Module):
    """Appearance commonality: z-scored dot-product affinity among the ROI's pixels, and the
    features coordinated by it (eq. 4.5)."""

    def __init__(self, channels: int, embed_channels: int | None = None) -> None:
        super().__init__()
        embed = channels if embed_channels is None else embed_channels
        self.theta = nn.Conv2d(channels, embed, 1, bias=False)
        self.phi = nn.Conv2d(channels, embed, 1, bias=False)
        self.g = nn.Conv2d(channels, channels, 1, bias=False)
        self.scale = embed**-0.5
        for conv in (self.theta, self.phi, self.g):
            msra_init(conv)

    def affinity(self, c: Tensor) -> Tensor:
        """Row-softmax affinity [R, hw, hw] (eqs. 4.3-4.4): row i is where pixel i attends."""
        q = zscore(self.theta(c).flatten(2), dim=1)  # R, d, N
        k = zscore(self.phi(c).flatten(2), dim=1)
        return torch.softmax(q.transpose(1, 2) @ k * self.scale, dim=-1)

    def forward(self, c: Tensor) -> tuple[Tensor, Tensor]:
        """C [R, ch, h, w] -> (C~ [R, ch, h, w], A [R, hw, hw])."""
        attention = self.affinity(c)
        coordinated = (self.g(c).flatten(2) @ attention.transpose(1, 2)).unflatten(2, c.shape[2:])
        return coordinated, attention


class CPMaskHead(nn.Module):
    """Class-agnostic commonality-parsing mask head.

    Switches (all on = CPMask; all off = the class-agnostic Mask R-CNN FCN head): ``boundary``
    (the Boundary-Parsing Module, its fusion and loss), ``affinity`` (the Affinity-Parsing unit),
    ``affinity_supervision`` (eq. 4.4; off, the unit is an unsupervised non-local block with
    z-scored embeddings). ``forward`` returns the affinity under "affinity" in training mode,
    where the loss needs it; :meth:`parse` returns every intermediate, e.g. for figures.
    """

    def __init__(self, in_channels: int, conv_channels: int = 256, num_convs: int = 4, boundary: bool = True,
                 affinity: bool = True, affinity_supervision: bool = True,
                 loss_weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        if affinity_supervision and not affinity:
            raise ValueError("affinity_supervision needs the affinity unit (affinity=True)")
        unknown = set(loss_weights or {}) - set(CPMASK_LOSS_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown loss weights {sorted(unknown)}; known: {sorted(CPMASK_LOSS_WEIGHTS)}")
        self.loss_weights = {**CPMASK_LOSS_WEIGHTS, **(loss_weights or {})}
        self.affinity_supervision = affinity_supervision
        self.boundary = BoundaryParsingModule(in_channels, num_convs) if boundary else None
        self.tower = ConvTower(in_channels, conv_channels, num_convs)
        self.affinity = AffinityParsingUnit(self.tower.out_channels) if affinity else None
        self.predictor = UpsamplePredictor(self.tower.out_channels)

    def parse(self, roi_features: Tensor) -> dict[str, Tensor]:
        """Logits "mask" and (with the module) "boundary" [R, 1, 28, 28], features "C" and, with the
        unit, "C_coordinated" [R, ch, 14, 14] and "affinity" [R, 196, 196]."""
        out: dict[str, Tensor] = {}
        fused = roi_features
        if self.boundary is not None:
            shape_features, out["boundary"] = self.boundary(roi_features)
            fused = roi_features + shape_features
        c = self.tower(fused)
        out["C"] = c
        if self.affinity is not None:
            out["C_coordinated"], out["affinity"] = self.affinity(c)
            c = c + out["C_coordinated"]
        out["mask"] = self.predictor(c)
        return out

    def forward(self, roi_features: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        """ROI features [R, C, 14, 14] -> {"mask", "boundary"?: logits [R, 1, 28, 28],
        "affinity"?: [R, 196, 196] (training with affinity supervision only)}. ``labels`` is
        unused (class-agnostic); accepted so heads are interchangeable."""
        parsed = self.parse(roi_features)
        keys = ["mask", "boundary"] + (["affinity"] if self.training and self.affinity_supervision else [])
        return {key: parsed[key] for key in keys if key in parsed}

    def loss(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Weighted terms of the outputs present (see :func:`cpmask_loss`)."""
        return cpmask_loss(outputs, targets, self.loss_weights)


def affinity_loss(affinity: Tensor, mask: Tensor) -> Tensor:
    """Eq. 4.4: mean over foreground rows i of |1 - sum_{j in Fg} A_ij| + |sum_{j in Bg} A_ij|.

    ``affinity`` [R, N, N] (rows sum to 1, N = h*w of a square grid), ``mask`` 0/1 targets
    [R, M, M] at any resolution; the mask is average-pooled to h x w and thresholded at 0.5.
    Without foreground rows the loss is ``affinity.sum() * 0`` (zero, still in the graph).
    """
    side = round(affinity.shape[-1] ** 0.5)
    if side * side != affinity.shape[-1]:
        raise ValueError(f"affinity over {affinity.shape[-1]} pixels is not a square grid")
    fg = F.adaptive_avg_pool2d(mask[:, None].to(affinity.dtype), side).flatten(1) >= 0.5  # R, N
    rows = fg.nonzero(as_tuple=True)
    if len(rows[0]) == 0:
        return affinity.sum() * 0
    on_fg = (affinity * fg[:, None, :]).sum(-1)  # R, N: each row's mass on foreground columns
    on_bg = (affinity * ~fg[:, None, :]).sum(-1)
    return ((1 - on_fg[rows]).abs() + on_bg[rows].abs()).mean()


def cpmask_loss(outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor],
                weights: Mapping[str, float] = CPMASK_LOSS_WEIGHTS) -> dict[str, Tensor]:
    """``loss_mask`` and ``loss_boundary`` (BCE against targets "mask", "boundary") and
    ``loss_affinity`` (eq. 4.4 against target "mask"), for the outputs present, times ``weights``."""
    maps = {key: value for key, value in outputs.items() if key != "affinity"}
    losses = mask_head_loss(maps, targets, weights)
    if "affinity" in outputs:
        losses["loss_affinity"] = affinity_loss(outputs["affinity"], targets["mask"]) * weights["affinity"]
    return losses
