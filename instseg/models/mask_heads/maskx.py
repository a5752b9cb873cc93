"""A MaskX-style weight-transfer mask head (Hu et al., "Learning to Segment Every Thing"): the
partially supervised baseline of Table 4.1.

A class-specific mask head whose per-class mask predictor is not learned per class but
*predicted* from that class's detection weights, w_seg = T(w_det), with T a small MLP shared by
all classes. Trained on the base categories' masks, T maps any class's detection weights to mask
weights, so novel categories, whose box weights the detector learned from boxes alone, get a
mask predictor too.

* ``w_det`` (:func:`box_predictor_embeddings`): per class, the classification row and the four
  box-regression rows of a frozen Faster R-CNN box predictor, concatenated ("cls+box"), held as a
  buffer, so no gradient reaches it (MaskX's stop-gradient variant). They are an input derived
  from the detector, not a hyperparameter: the registry's ``build_mask_head("maskx", ...,
  detector=...)`` reads them through :meth:`WeightTransferMaskHead.inputs_from_detector`.
* T: Linear -> LeakyReLU -> Linear, to the weights and the bias of a 1x1 conv on the upsampled
  mask features.
* The mask features: the FCN head's tower and deconv, class-agnostic.

Left out, where MaskX has more: its class-agnostic MLP branch fused with the FCN logits (fully
connected from the 14x14 ROI features to 28x28 logits: millions of parameters beside our heads'
0.2 million), and end-to-end training with the
detector (here the detector is frozen, as for every head of notebook 03).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.models.mask_heads.fcn import ConvTower, mask_head_loss, msra_init


def box_predictor_embeddings(box_predictor: nn.Module) -> Tensor:
    """``w_det`` [K, D + 4 D] of a torchvision ``FastRCNNPredictor`` (K labels, background 0 included):
    row k is the classification weights of label k, then its four box-regression weight rows."""
    if not (hasattr(box_predictor, "cls_score") and hasattr(box_predictor, "bbox_pred")):
        raise ValueError(f"weight transfer needs a Faster R-CNN box predictor with per-class cls_score and "
                         f"bbox_pred layers; got {type(box_predictor).__name__}")
    cls = box_predictor.cls_score.weight.detach()
    box = box_predictor.bbox_pred.weight.detach()
    if box.shape[0] != 4 * cls.shape[0]:
        raise ValueError(f"bbox_pred has {box.shape[0]} rows for {cls.shape[0]} classes; expected class-specific "
                         "regression (4 rows per class)")
    return torch.cat([cls, box.reshape(cls.shape[0], -1)], dim=1).clone()


def detector_box_predictor(detector: nn.Module) -> nn.Module:
    """The box predictor of a torchvision Faster R-CNN (``detector.roi_heads.box_predictor``)."""
    predictor = getattr(getattr(detector, "roi_heads", None), "box_predictor", None)
    if predictor is None:
        raise ValueError(f"weight transfer reads a Faster R-CNN's roi_heads.box_predictor; {type(detector).__name__} "
                         "has none (FCOS has no per-class box weights)")
    return predictor


class WeightTransferMaskHead(nn.Module):
    """FCN tower + deconv, then a per-ROI 1x1 predictor whose weights T(w_det[label]) are computed
    from the ROI's label. ``class_embeddings`` [K, E] is indexed by the detector's labels; build
    the head from a frozen detector with :meth:`from_detector` (or the registry's ``detector=``)."""

    # constructor arguments derived from the frozen detector, not hyperparameters
    detector_inputs: ClassVar[tuple[str, ...]] = ("class_embeddings",)

    def __init__(self, in_channels: int, class_embeddings: Tensor, conv_channels: int = 256, num_convs: int = 4,
                 hidden: int | None = None) -> None:
        super().__init__()
        if class_embeddings.dim() != 2:
            raise ValueError(f"class_embeddings must be [K, E]; got shape {tuple(class_embeddings.shape)}")
        self.register_buffer("class_embeddings", class_embeddings.detach().float().clone())
        self.tower = ConvTower(in_channels, conv_channels, num_convs)
        channels = self.tower.out_channels
        self.deconv = nn.ConvTranspose2d(channels, channels, 2, stride=2)
        msra_init(self.deconv)
        hidden = hidden or channels
        self.transfer = nn.Sequential(nn.Linear(class_embeddings.shape[1], hidden), nn.LeakyReLU(0.1),
                                      nn.Linear(hidden, channels + 1))
        # like Mask R-CNN's small predictor init: every pixel starts near p=0.5, for every class
        nn.init.normal_(self.transfer[2].weight, std=0.001)
        nn.init.zeros_(self.transfer[2].bias)

    @classmethod
    def inputs_from_detector(cls, detector: nn.Module) -> dict[str, Any]:
        """``{"class_embeddings": w_det}`` of ``detector``'s box predictor (a detached copy)."""
        return {"class_embeddings": box_predictor_embeddings(detector_box_predictor(detector))}

    @classmethod
    def from_detector(cls, detector: nn.Module, in_channels: int, **kwargs: Any) -> "WeightTransferMaskHead":
        """The head whose class embeddings are ``detector``'s box weights; ``kwargs`` are its
        hyperparameters (``conv_channels``, ``num_convs``, ``hidden``)."""
        return cls(in_channels, **cls.inputs_from_detector(detector), **kwargs)

    def mask_weights(self, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(weights [R, C], bias [R]) of the 1x1 mask predictor of each label."""
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(self.class_embeddings)):
            raise ValueError(f"labels must lie in 0..{len(self.class_embeddings) - 1}; got "
                             f"{int(labels.min())}..{int(labels.max())}")
        predicted = self.transfer(self.class_embeddings[labels])
        return predicted[:, :-1], predicted[:, -1]

    def forward(self, roi_features: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        """ROI features [R, C, 14, 14] and their labels [R] -> {"mask": logits [R, 1, 28, 28]}."""
        if labels is None:
            raise ValueError("the weight-transfer head is class-specific: it needs the ROIs' labels")
        features = F.relu(self.deconv(self.tower(roi_features)))
        weights, bias = self.mask_weights(labels)
        logits = torch.einsum("rchw,rc->rhw", features, weights) + bias[:, None, None]
        return {"mask": logits[:, None]}

    def loss(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """{"loss_mask": BCE} (see ``mask_head_loss``)."""
        return mask_head_loss(outputs, targets)
