"""VOIN's inpainting losses as pure functions of tensors (section 5.4.3).

The thesis names the terms but gives no formulas or weights for this stage ("two spatio-temporal
discriminators with multi-class adversarial losses"); what it does not say follows STTN's released
configuration (one of its two cited generators, [140]): L1 on the hole and on the valid region
(each averaged over its own pixels and channels, weights 1 and 1), hinge loss for T-PatchGAN
(as FFVI / LGTSM / STTN) with generator weight 0.01. The multi-class discriminator is a (K+1)-way
classifier: cross-entropy with real clips -> their category, generated clips -> "fake" (class K);
the generator's term is cross-entropy of its clips -> the target's true category (it must pass for
a real object of that class), weighted 0.01 like the other adversarial term (our choice).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from instseg.errors import InputError
from instseg.video.voin.params import voin_config


@dataclass(frozen=True)
class LossWeights:
    """Weights of the generator and discriminator totals."""

    hole: float = 1.0  # L1 inside the hole (the occluded part)
    valid: float = 1.0  # L1 outside it
    adversarial: float = 0.01  # T-PatchGAN hinge term of the generator
    multiclass: float = 0.01  # multi-class term of the generator
    d_tpatch: float = 1.0  # discriminator side
    d_multiclass: float = 1.0

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> "LossWeights":
        return voin_config(cls, params, "voin.losses")


def masked_l1(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean |pred - target| over the pixels and channels where ``mask`` (broadcast over channels)
    is on; 0 for an empty mask. Averaging per region keeps a small hole from vanishing in the mean."""
    if pred.shape != target.shape:
        raise InputError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    pred, target, mask = pred.float(), target.float(), mask.float()  # sums in float32 under autocast
    total = (torch.abs(pred - target) * mask).sum()
    count = mask.expand_as(pred).sum()
    return total / count.clamp(min=1.0)


def reconstruction_losses(pred: Tensor, target: Tensor, hole: Tensor) -> dict[str, Tensor]:
    """"hole" and "valid" L1 terms of a clip [B, C, T, H, W] against its ground truth; ``hole`` [B, 1, T, H, W]."""
    return {"hole": masked_l1(pred, target, hole), "valid": masked_l1(pred, target, 1 - hole)}


def hinge_d_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """Discriminator hinge: mean relu(1 - D(real)) + mean relu(1 + D(fake)), over all patches."""
    return F.relu(1 - real_scores.float()).mean() + F.relu(1 + fake_scores.float()).mean()


def hinge_g_loss(fake_scores: Tensor) -> Tensor:
    """Generator side of the hinge loss: -mean D(fake)."""
    return -fake_scores.float().mean()


def _check_labels(logits: Tensor, labels: Tensor) -> None:
    """Labels must be real categories: the last logit is "fake", never a clip's label."""
    if logits.dim() != 2 or labels.shape != (logits.shape[0],):
        raise InputError(f"need logits [B, K+1] and labels [B], got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    fake = logits.shape[1] - 1
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= fake):
        raise InputError(f"labels must be real categories 0..{fake - 1} (class {fake} is fake)")


def multiclass_d_loss(real_logits: Tensor, fake_logits: Tensor, labels: Tensor) -> Tensor:
    """CE(real clips -> their category) + CE(generated clips -> fake); logits [B, K+1], labels [B]."""
    _check_labels(real_logits, labels)
    fake_class = torch.full((fake_logits.shape[0],), fake_logits.shape[1] - 1, dtype=torch.long,
                            device=fake_logits.device)
    return F.cross_entropy(real_logits.float(), labels) + F.cross_entropy(fake_logits.float(), fake_class)


def multiclass_g_loss(fake_logits: Tensor, labels: Tensor) -> Tensor:
    """CE(generated clips -> the target's real category)."""
    _check_labels(fake_logits, labels)
    return F.cross_entropy(fake_logits.float(), labels)


def generator_loss(pred: Tensor, target: Tensor, hole: Tensor, tpatch_fake: Tensor | None = None,
                   multiclass_fake: Tensor | None = None, labels: Tensor | None = None,
                   weights: LossWeights | None = None) -> dict[str, Tensor]:
    """Every generator term and their weighted "total". ``pred`` is the generator's raw clip (the L1
    terms), the scores and logits are the discriminators' on the inpainted (composited) clip; a
    discriminator a model is trained without (None) contributes no term (LGTSM has no multi-class one)."""
    w = weights or LossWeights()
    terms = reconstruction_losses(pred, target, hole)
    total = w.hole * terms["hole"] + w.valid * terms["valid"]
    if tpatch_fake is not None:
        terms["adversarial"] = hinge_g_loss(tpatch_fake)
        total = total + w.adversarial * terms["adversarial"]
    if multiclass_fake is not None:
        if labels is None:
            raise InputError("the multi-class term needs the clips' labels")
        terms["multiclass"] = multiclass_g_loss(multiclass_fake, labels)
        total = total + w.multiclass * terms["multiclass"]
    terms["total"] = total
    return terms


def discriminator_loss(tpatch_real: Tensor | None, tpatch_fake: Tensor | None, multiclass_real: Tensor | None,
                       multiclass_fake: Tensor | None, labels: Tensor | None = None,
                       weights: LossWeights | None = None) -> dict[str, Tensor]:
    """Both discriminators' terms and their weighted "total" (fake inputs computed on a detached clip);
    a discriminator given as None (real and fake) has no term. At least one must be given."""
    w = weights or LossWeights()
    terms: dict[str, Tensor] = {}
    parts = []
    if (tpatch_real is None) != (tpatch_fake is None) or (multiclass_real is None) != (multiclass_fake is None):
        raise InputError("give a discriminator's real and fake outputs together, or neither")
    if tpatch_real is not None:
        terms["tpatch"] = hinge_d_loss(tpatch_real, tpatch_fake)
        parts.append(w.d_tpatch * terms["tpatch"])
    if multiclass_real is not None:
        if labels is None:
            raise InputError("the multi-class term needs the clips' labels")
        terms["multiclass"] = multiclass_d_loss(multiclass_real, multiclass_fake, labels)
        parts.append(w.d_multiclass * terms["multiclass"])
    if not parts:
        raise InputError("no discriminator output given")
    terms["total"] = sum(parts[1:], parts[0])
    return terms
