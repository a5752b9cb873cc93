"""VOIN's two discriminators (section 5.4.3), used in training only.

* :class:`TPatchGAN` (FFVI / STTN): six spectrally normalised Conv3d (3, 5, 5), stride (1, 2, 2),
  64-128-256-256-256-256, LeakyReLU(0.2) between; every output element is one real/fake score for
  a spatio-temporal patch: perceptual quality and temporal consistency.
* :class:`MultiClassDiscriminator`: the same six 3x5x5 convolutions with the spatio-temporal
  attention module (:class:`STAM`) after the 4th; the 6th outputs K + 1 logits per patch (K
  object categories + "fake"), averaged into clip logits: object semantics.

Both read the frames with one mask channel (by default): T-PatchGAN the hole, as FFVI's, so it
knows where to look; the multi-class one the amodal mask, so it knows which object to classify.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from instseg.errors import InputError

CHANNELS: tuple[int, ...] = (64, 128, 256, 256, 256, 256)
KERNEL = (3, 5, 5)
STRIDE = (1, 2, 2)
PADDING = (1, 2, 2)


def sn_conv3d(in_channels: int, out_channels: int) -> nn.Module:
    """A 3x5x5 Conv3d, stride (1, 2, 2), under spectral norm (Lipschitz-bounded: stable GAN training)."""
    return spectral_norm(nn.Conv3d(in_channels, out_channels, KERNEL, stride=STRIDE, padding=PADDING))


def clip_input(frames: Tensor, mask: Tensor | None, mask_channels: int) -> Tensor:
    """Frames [B, 3, T, H, W] (+ mask [B, m, T, H, W]) as one tensor, checked."""
    if frames.dim() != 5 or frames.shape[1] != 3:
        raise InputError(f"frames must be [B, 3, T, H, W], got shape {tuple(frames.shape)}")
    if mask_channels == 0:
        if mask is not None:
            raise InputError("a mask was given to a discriminator built without mask channels")
        return frames
    if mask is None:
        raise InputError(f"this discriminator reads {mask_channels} mask channel(s): pass mask")
    if mask.dim() != 5 or mask.shape[1] != mask_channels:
        raise InputError(f"mask must be [B, {mask_channels}, T, H, W], got shape {tuple(mask.shape)}")
    for axis, label in ((0, "B"), (2, "T"), (3, "H"), (4, "W")):
        if mask.shape[axis] != frames.shape[axis]:
            raise InputError(f"mask has {label}={mask.shape[axis]} but frames have {label}={frames.shape[axis]}")
    return torch.cat([frames, mask.to(frames.dtype)], dim=1)


class TPatchGAN(nn.Module):
    """Temporal PatchGAN: frames (+ mask) -> scores [B, 256, T, H/64, W/64] (rounded up)."""

    def __init__(self, mask_channels: int = 1, channels: tuple[int, ...] = CHANNELS) -> None:
        super().__init__()
        self.mask_channels = mask_channels
        widths = (3 + mask_channels, *channels)
        self.convs = nn.ModuleList([sn_conv3d(a, b) for a, b in zip(widths[:-1], widths[1:])])

    def forward(self, frames: Tensor, mask: Tensor | None = None) -> Tensor:
        x = clip_input(frames, mask, self.mask_channels)
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = F.leaky_relu(x, 0.2)
        return x


class STAM(nn.Module):
    """Spatio-temporal attention: two parallel branches re-weight the features and their sum joins
    the input as a residual, out = x + P_s(x ⊙ A_s) + P_t(x ⊙ A_t).

    A_s [B, 1, T, H, W] = sigmoid of a 7x7 conv on the channel mean and max (where in each frame
    to look); A_t [B, 1, T, 1, 1] = T * softmax over frames of an MLP on the frame's pooled
    features (which frames matter; mean 1). P_s, P_t are 1x1x1 convs ending each branch, so zeroing
    a branch's parameters leaves the identity. Not spectrally normalised (a zero weight has no norm).
    """

    def __init__(self, channels: int, reduction: int = 8, spatial_kernel: int = 7) -> None:
        super().__init__()
        k = spatial_kernel
        self.spatial = nn.Conv3d(2, 1, (1, k, k), padding=(0, k // 2, k // 2))
        hidden = max(channels // reduction, 1)
        self.temporal = nn.Sequential(nn.Conv1d(channels, hidden, 1), nn.ReLU(), nn.Conv1d(hidden, 1, 1))
        self.spatial_out = nn.Conv3d(channels, channels, 1)
        self.temporal_out = nn.Conv3d(channels, channels, 1)

    def attention(self, x: Tensor) -> dict[str, Tensor]:
        """The two branches' weights: "spatial" [B, 1, T, H, W] and "temporal" [B, 1, T, 1, 1]."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        spatial = torch.sigmoid(self.spatial(pooled))
        scores = self.temporal(x.mean(dim=(3, 4)))  # [B, 1, T]
        temporal = scores.softmax(dim=-1) * x.shape[2]
        return {"spatial": spatial, "temporal": temporal[..., None, None]}

    def forward(self, x: Tensor) -> Tensor:
        a = self.attention(x)
        return x + self.spatial_out(x * a["spatial"]) + self.temporal_out(x * a["temporal"])


class MultiClassDiscriminator(nn.Module):
    """Frames (+ amodal mask) -> "patch_logits" [B, K+1, T, h, w] and "logits" [B, K+1] (their
    mean); class K is "fake". ``stam`` False is the "no STAM" ablation (identity in its place)."""

    def __init__(self, num_classes: int, mask_channels: int = 1, channels: tuple[int, ...] = CHANNELS[:5],
                 stam: bool = True, stam_after: int = 4) -> None:
        super().__init__()
        if num_classes < 1:
            raise InputError(f"num_classes must be >= 1, got {num_classes}")
        if not 1 <= stam_after <= len(channels):
            raise InputError(f"stam_after must be in 1..{len(channels)}, got {stam_after}")
        self.num_classes, self.mask_channels, self.stam_after = num_classes, mask_channels, stam_after
        widths = (3 + mask_channels, *channels, num_classes + 1)
        self.convs = nn.ModuleList([sn_conv3d(a, b) for a, b in zip(widths[:-1], widths[1:])])
        self.stam = STAM(channels[stam_after - 1]) if stam else None

    @property
    def fake_class(self) -> int:
        return self.num_classes

    def forward(self, frames: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        x = clip_input(frames, mask, self.mask_channels)
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = F.leaky_relu(x, 0.2)
            if i + 1 == self.stam_after and self.stam is not None:
                x = self.stam(x)
        return {"patch_logits": x, "logits": x.mean(dim=(2, 3, 4))}
