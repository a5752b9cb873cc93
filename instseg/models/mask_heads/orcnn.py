"""ORCNN's amodal / visible / occlusion mask heads (Follmann et al., "Learning to See the Invisible:
End-to-End Trainable Amodal Instance Segmentation", WACV 2019), the amodal baseline of Table 3.5.

ORCNN extends Mask R-CNN with two mask heads on the same ROI features, an *amodal* head (the
whole object, the evaluated output) and an *inmodal* (visible) head, and derives the *occlusion*
(invisible) mask from their two predictions instead of learning a third head::

    A = sigma(a),  V = sigma(v)                  a, v: amodal / visible logits [R, 1, 28, 28]
    O = ReLU(A - V)                              occlusion probability
    L = BCE(A, y_amodal) + BCE(V, y_visible) + BCE(O, y_amodal AND NOT y_visible)

The occlusion term is what makes ORCNN more than two independent heads: dL_O/da and dL_O/dv are
both non-zero where A > V, so the occlusion loss trains the amodal and the visible branch
together (a Mask R-CNN head on amodal masks, AmodalMRCNN, has only the first term).

Choices of ours, where the paper is silent or we could not check its text:

* O is clamped to [eps, 1 - eps] (eps = 1e-4) before the BCE, so a pixel where the ReLU is off
  costs a bounded -log(eps) and passes no gradient; ``forward`` returns O as logits
  (``logit(clamp(O))``), so the term is an ordinary BCE-with-logits beside the others and
  ``sigmoid`` of every output is its probability;
* the three terms have weight 1;
* (a detectron2 port, waiyulam/ORCNN, computes the occlusion *logits* as a - ReLU(v) instead;
  we follow the subtraction of the two sigmoid masks with a ReLU, as we read the paper);
* the branches are initialised from their own random stream, derived from the caller's stream and
  the head's name, so an ORCNN built under the same seed as a plain FCN head does not start
  from the FCN head's weights.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.models.mask_heads.fcn import FCNMaskHead, mask_head_loss
from instseg.models.mask_heads.targets import occlusion_targets

ORCNN_LOSS_WEIGHTS: dict[str, float] = {"mask": 1.0, "visible_mask": 1.0, "invisible_mask": 1.0}
OCCLUSION_EPS = 1e-4


def occlusion_probabilities(amodal_logits: Tensor, visible_logits: Tensor) -> Tensor:
    """O = ReLU(sigma(a) - sigma(v)): the part of the amodal mask the visible mask does not cover."""
    return F.relu(amodal_logits.sigmoid() - visible_logits.sigmoid())


def occlusion_logits(amodal_logits: Tensor, visible_logits: Tensor, eps: float = OCCLUSION_EPS) -> Tensor:
    """``logit(clamp(O, eps, 1 - eps))``, so BCE-with-logits on it is the BCE of the clamped O."""
    return torch.logit(occlusion_probabilities(amodal_logits, visible_logits).clamp(eps, 1 - eps))


def stream_seed(name: str) -> int:
    """A seed for ``name``'s own stream: one draw from the caller's torch stream (so it follows
    ``torch.manual_seed``) mixed with the name, so two heads built under one seed differ."""
    base = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    return int(np.random.SeedSequence([base, zlib.crc32(name.encode())]).generate_state(1)[0])


class OcclusionRCNNHead(nn.Module):
    """Class-agnostic ORCNN mask heads: two Mask R-CNN FCN heads (amodal, visible) and the
    occlusion mask derived from them (see the module docstring).

    ``forward`` returns "mask" (amodal logits, the evaluated output); in training, or with
    ``return_maps``, also "visible_mask" and "invisible_mask" (occlusion logits). At inference
    without maps the visible branch is not run.
    """

    optional_maps = ("visible_mask", "invisible_mask")

    def __init__(self, in_channels: int, conv_channels: int = 256, num_convs: int = 4,
                 loss_weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        unknown = set(loss_weights or {}) - set(ORCNN_LOSS_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown loss weights {sorted(unknown)}; known: {sorted(ORCNN_LOSS_WEIGHTS)}")
        self.loss_weights = {**ORCNN_LOSS_WEIGHTS, **(loss_weights or {})}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed("orcnn"))
            self.amodal = FCNMaskHead(in_channels, conv_channels, num_convs)
            self.visible = FCNMaskHead(in_channels, conv_channels, num_convs)

    def forward(self, roi_features: Tensor, labels: Tensor | None = None,
                return_maps: bool = False) -> dict[str, Tensor]:
        """ROI features [R, C, 14, 14] -> logits [R, 1, 28, 28]: "mask" (amodal) and, in
        training or with ``return_maps``, "visible_mask" and "invisible_mask". ``labels`` is
        unused (class-agnostic); accepted so heads are interchangeable."""
        amodal = self.amodal(roi_features)["mask"]
        if not (self.training or return_maps):
            return {"mask": amodal}
        visible = self.visible(roi_features)["mask"]
        return {"mask": amodal, "visible_mask": visible, "invisible_mask": occlusion_logits(amodal, visible)}

    def loss(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``loss_mask``, ``loss_visible_mask``, ``loss_invisible_mask`` (see :func:`orcnn_loss`)."""
        return orcnn_loss(outputs, targets, self.loss_weights)


def orcnn_loss(outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor],
               weights: Mapping[str, float] = ORCNN_LOSS_WEIGHTS) -> dict[str, Tensor]:
    """Weighted BCE of the outputs present against targets "mask" (amodal), "visible_mask" and
    "invisible_mask"; the last, when the targets lack it, is derived as amodal AND NOT visible
    (:func:`~instseg.models.mask_heads.targets.occlusion_targets`)."""
    if "invisible_mask" in outputs and "invisible_mask" not in targets:
        missing = {"mask", "visible_mask"} - set(targets)
        if missing:
            raise KeyError(f"the occlusion target needs targets {sorted(missing)}; targets have {sorted(targets)}")
        targets = {**targets, "invisible_mask": occlusion_targets(targets["mask"], targets["visible_mask"])}
    return mask_head_loss(outputs, targets, weights)
