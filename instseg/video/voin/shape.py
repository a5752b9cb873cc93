"""VOIN's occlusion-aware shape completion (section 5.4.1, eqs. 5.9-5.10): visible masks of one
object over a clip, plus its class, in; amodal mask logits per frame out.

The parts, as the text lists them:

* a per-frame conv **encoder** (stride 4) of the visible mask and two coordinate channels (the
  attention below is permutation-invariant, so position has to be in the features; there is no
  temporal position code: to the attention a clip's frames are a set);
* **transformer layers** whose heads each cut the feature maps of *all* frames into patches of
  their own size (STTN's multi-scale heads, which the text follows: patches of size ``r1 x r2``,
  ``T x H/r1 x W/r2`` of them per head) and attend across all of them with
  ``softmax(Q K^T / sqrt(d_k)) V`` (eq. 5.10); a 3x3 conv merges the heads (the "fc ... convolutional
  layers merging the outputs from the k heads" of eq. 5.9), then a conv feed-forward block;
* a frame-level **shape decoder** that upsamples back to the input size;
* a learned **class embedding** multiplied by the visible mask (semantics and spatial prior),
  concatenated with the decoder's features and the visible mask itself (so that keeping the
  visible part needs no detour through the embedding), and **fusion convs** producing the amodal
  logits.

The text gives no loss for this module; :func:`shape_loss` is per-pixel BCE on the amodal mask
(the usual mask loss), with an optional extra BCE term on the pixels outside the visible mask,
where all the completion happens (off by default: the text names no such term).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.errors import InputError
from instseg.video.voin.params import voin_config

STRIDE = 4  # the encoder's downsampling; patch sizes are in feature cells (x STRIDE pixels)


@dataclass(frozen=True)
class ShapeConfig:
    """Size of the shape-completion model. Defaults: the cpu scale (2 layers; the paper has 8)."""

    num_classes: int = 10  # category ids 1..num_classes; 0 = unknown (its embedding is learned too)
    channels: int = 48  # transformer width; split evenly over the heads
    patch_sizes: tuple[int, ...] = (1, 2, 4)  # one head per size, in feature cells: 4, 8, 16 px
    layers: int = 2
    ffn_channels: int = 96
    decoder_channels: int = 16
    class_dim: int = 8
    fusion_layers: int = 2

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> ShapeConfig:
        return voin_config(cls, params, "voin.shape")

    def check(self) -> None:
        if not self.patch_sizes or any(int(p) < 1 for p in self.patch_sizes):
            raise InputError(f"patch_sizes must be positive, got {self.patch_sizes}", record="voin.shape")
        if self.channels % len(self.patch_sizes):
            raise InputError(f"channels {self.channels} must divide evenly over {len(self.patch_sizes)} heads",
                             record="voin.shape")
        if min(self.layers, self.num_classes, self.class_dim, self.decoder_channels, self.fusion_layers) < 1:
            raise InputError("layers, num_classes, class_dim, decoder_channels and fusion_layers must be >= 1",
                             record="voin.shape")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


class MultiScalePatchAttention(nn.Module):
    """Eqs. 5.9-5.10 over a clip's feature maps ``(B, T, C, h, w)``: head ``i`` takes ``C / k``
    channels, cuts every frame into ``p_i x p_i`` patches (a token = a patch's flattened features)
    and attends over the ``T h w / p_i^2`` patches of the whole clip; a 3x3 conv merges the heads."""

    def __init__(self, channels: int, patch_sizes: tuple[int, ...]):
        super().__init__()
        self.patch_sizes = tuple(int(p) for p in patch_sizes)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.merge = _conv(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c, h, w = x.shape
        q, k, v = self.qkv(x.flatten(0, 1)).view(b, t, 3, c, h, w).unbind(2)
        width = c // len(self.patch_sizes)
        outs = []
        for i, p in enumerate(self.patch_sizes):
            part = slice(i * width, (i + 1) * width)
            tokens = [_patches(z[:, :, part], p) for z in (q, k, v)]  # (B, 1, N, width p^2)
            out = F.scaled_dot_product_attention(*tokens)  # softmax(Q K^T / sqrt(d_k)) V
            outs.append(_unpatch(out, t, width, h, w, p))
        return self.merge(torch.cat(outs, 2).flatten(0, 1)).view(b, t, c, h, w)


def _patches(z: Tensor, p: int) -> Tensor:
    """(B, T, c, h, w) -> (B, 1, T (h/p) (w/p), c p p): one token per patch of every frame."""
    b, t, c, h, w = z.shape
    z = z.reshape(b, t, c, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4, 6)
    return z.reshape(b, 1, t * (h // p) * (w // p), c * p * p)


def _unpatch(tokens: Tensor, t: int, c: int, h: int, w: int, p: int) -> Tensor:
    """Inverse of :func:`_patches`."""
    b = tokens.shape[0]
    z = tokens.reshape(b, t, h // p, w // p, c, p, p).permute(0, 1, 4, 2, 5, 3, 6)
    return z.reshape(b, t, c, h, w)


class TransformerLayer(nn.Module):
    """Pre-norm residual block: multi-scale patch attention, then a conv feed-forward (STTN's)."""

    def __init__(self, channels: int, patch_sizes: tuple[int, ...], ffn_channels: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(1, channels)
        self.attention = MultiScalePatchAttention(channels, patch_sizes)
        self.norm2 = nn.GroupNorm(1, channels)
        self.ffn = nn.Sequential(_conv(channels, ffn_channels), nn.LeakyReLU(0.2), _conv(ffn_channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        b, t, c, h, w = x.shape
        x = x + self.attention(self.norm1(x.flatten(0, 1)).view(b, t, c, h, w))
        flat = x.flatten(0, 1)
        return (flat + self.ffn(self.norm2(flat))).view(b, t, c, h, w)


class ShapeCompletion(nn.Module):
    """``model(visible, labels)``: visible masks ``(B, T, H, W)`` (bool or float in [0, 1]) and
    category ids ``(B,)`` -> amodal mask logits ``(B, T, H, W)``. Any ``H, W``: inputs are zero-padded
    to a multiple of ``4 * max(patch_sizes)`` and the output cropped back."""

    def __init__(self, cfg: ShapeConfig = ShapeConfig()):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        c, d = cfg.channels, cfg.decoder_channels
        self.encoder = nn.Sequential(_conv(3, c // 2), nn.ReLU(), _conv(c // 2, c, 2), nn.ReLU(),
                                     _conv(c, c, 2), nn.ReLU(), _conv(c, c))
        self.layers = nn.ModuleList(TransformerLayer(c, cfg.patch_sizes, cfg.ffn_channels) for _ in range(cfg.layers))
        self.decoder = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                     _conv(c, c // 2), nn.ReLU(),
                                     nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                     _conv(c // 2, d), nn.ReLU())
        self.class_embedding = nn.Embedding(cfg.num_classes + 1, cfg.class_dim)
        fusion: list[nn.Module] = []
        for i in range(cfg.fusion_layers):
            fusion += [_conv(d + cfg.class_dim + 1 if i == 0 else d, d), nn.ReLU()]
        self.fusion = nn.Sequential(*fusion, nn.Conv2d(d, 1, 1))

    @property
    def multiple(self) -> int:
        return STRIDE * max(self.cfg.patch_sizes)

    def forward(self, visible: Tensor, labels: Tensor) -> Tensor:
        check_inputs(visible, labels, self.cfg.num_classes)
        b, t, h, w = visible.shape
        m = self.multiple
        ph, pw = -h % m, -w % m
        vis = F.pad(visible.float(), (0, pw, 0, ph)).flatten(0, 1).unsqueeze(1)  # (B T, 1, H', W')
        hh, ww = h + ph, w + pw
        ys = torch.linspace(-1.0, 1.0, hh, device=vis.device).view(1, 1, hh, 1).expand(b * t, 1, hh, ww)
        xs = torch.linspace(-1.0, 1.0, ww, device=vis.device).view(1, 1, 1, ww).expand(b * t, 1, hh, ww)
        x = self.encoder(torch.cat([vis, ys, xs], 1))
        x = x.view(b, t, *x.shape[1:])
        for layer in self.layers:
            x = layer(x)
        shape = self.decoder(x.flatten(0, 1))  # (B T, d, H', W')
        semantics = self.class_embedding(labels).repeat_interleave(t, 0)[:, :, None, None] * vis
        logits = self.fusion(torch.cat([shape, semantics, vis], 1))
        return logits.view(b, t, hh, ww)[:, :, :h, :w]


def check_inputs(visible: Tensor, labels: Tensor, num_classes: int) -> None:
    """InputError unless ``visible`` is ``(B, T, H, W)`` and ``labels`` holds B ids in 0..num_classes."""
    if visible.dim() != 4:
        raise InputError(f"visible masks must be (B, T, H, W), got shape {tuple(visible.shape)}",
                         record="shape completion input")
    if labels.dim() != 1 or labels.shape[0] != visible.shape[0]:
        raise InputError(f"labels must be ({visible.shape[0]},) for {visible.shape[0]} clips, got "
                         f"{tuple(labels.shape)}", record="shape completion input")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > num_classes):
        raise InputError(f"labels must lie in 0..{num_classes}, got {labels.tolist()}", record="shape completion input")


def shape_loss(logits: Tensor, amodal: Tensor, visible: Tensor | None = None,
               invisible_weight: float = 0.0) -> dict[str, Tensor]:
    """``loss_amodal``: mean per-pixel BCE of the logits against the amodal masks (bool or soft
    targets in [0, 1]), all ``(B, T, H, W)``. With ``invisible_weight > 0`` (needs ``visible``) also
    ``loss_invisible``: that weight times the BCE averaged over the pixels outside the visible mask."""
    if logits.shape != amodal.shape:
        raise InputError(f"amodal masks {tuple(amodal.shape)} do not match the logits {tuple(logits.shape)}",
                         record="shape loss")
    target = amodal.to(logits.dtype)
    per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    losses = {"loss_amodal": per_pixel.mean()}
    if invisible_weight > 0:
        if visible is None or visible.shape != logits.shape:
            raise InputError("the invisible term needs visible masks shaped like the logits", record="shape loss")
        outside = 1.0 - visible.to(logits.dtype)
        losses["loss_invisible"] = invisible_weight * (per_pixel * outside).sum() / outside.sum().clamp(min=1.0)
    return losses
