"""VOIN's occlusion-aware gated generator (section 5.4.3, eqs. 5.11-5.13).

Each layer is a gated TSM convolution whose gate also reads the target's masks:

    Gate_occ(t) = Σ W_g · I_t + f̄_t(M̂_occ_t, M̂_t)                (5.11)
    S_t         = Σ W_f · TSM(I_{t-n}, ..., I_t, ..., I_{t+n})      (5.12)
    Out_t       = σ(Gate_occ(t)) ⊙ φ(S_t)                          (5.13)

with f̄ small convolutions fusing the occluded-part mask M̂_occ and the amodal mask M̂ (taken at the
layer's output resolution), W_g the gating and W_f the feature (shift-module) kernels, φ the ReLU
the thesis names. The extracted text prints W_f in the gate line and W_g in the S line, but the
sentence after it says W_g is the gating kernel: we follow the sentence (only the names differ).
Note what eq. 5.11 implies: the gate reads the current frame I_t, only the feature reads the shift.

``occlusion_gating`` False drops f̄ (the gate is Σ W_g · I_t alone): the LGTSM-like gated-TSM
baseline and the "no occlusion gating" ablation. Both modes get the masks as input channels, so
the ablation removes only the gating path; the parameter difference is exactly f̄'s parameters
(:meth:`OcclusionAwareGenerator.mask_fusion_parameters`).

Layout: encoder (5x5 conv, two stride-2 gated layers with residual blocks between), dilated
residual blocks at 1/4 resolution, decoder (nearest up-sampling + gated layer, twice), a plain
3x3 conv to RGB with tanh: frames live in [-1, 1]. No normalisation layers: batch statistics would
mix frames and break the exact temporal receptive field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.errors import InputError
from instseg.video.voin.clip_inputs import (FRAME_CHANNELS, MASK_NAMES, check_clip_inputs, inpainting_output,
                                            masked_input)
from instseg.video.voin.params import voin_config
from instseg.video.voin.tsm import ACTIVATIONS, GatedTSMConv, frame_conv


@dataclass(frozen=True)
class GeneratorConfig:
    """Generator settings; defaults are our 128 px scale."""

    channels: int = 32  # width at full resolution, doubled at each down-sampling
    temporal_range: int = 1  # n of eq. 5.12: each layer reads frames t-n .. t+n
    fold: int | None = None  # channels per shifted block; None: C // (4n) (half the channels shift)
    stage_blocks: int = 1  # residual blocks at 1/2 resolution, in the encoder and in the decoder
    dilations: tuple[int, ...] = (2, 4, 8)  # one dilated residual block each, at 1/4 resolution
    occlusion_gating: bool = True  # f̄ in eq. 5.11; False = plain gated TSM
    mask_hidden: int = 16  # width of f̄'s hidden layer
    activation: str = "relu"  # φ of eq. 5.13 ("leaky_relu": FFVI's)
    shift_gate: bool = False  # True: the gate reads the shifted input too (FFVI), not I_t (eq. 5.11)
    use_propagated: bool = False  # flow-propagated frames as 3 more input channels

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> "GeneratorConfig":
        return voin_config(cls, params, "voin.generator")

    def check(self) -> None:
        if self.channels < 4 or self.temporal_range < 1 or self.stage_blocks < 0 or self.mask_hidden < 1:
            raise InputError("need channels >= 4, temporal_range >= 1, stage_blocks >= 0, mask_hidden >= 1",
                             record="voin.generator")
        if self.activation not in ACTIVATIONS:
            raise InputError(f"activation must be one of {sorted(ACTIVATIONS)}", record="voin.generator")
        if any(d < 1 for d in self.dilations):
            raise InputError(f"dilations must be >= 1, got {self.dilations}", record="voin.generator")

    @property
    def in_channels(self) -> int:
        return FRAME_CHANNELS * (2 if self.use_propagated else 1) + len(MASK_NAMES)


class MaskFusion(nn.Module):
    """f̄ of eq. 5.11: two per-frame 3x3 convolutions mapping [M̂_occ, M̂] to one gate offset per channel."""

    def __init__(self, out_channels: int, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(frame_conv(2, hidden, 3), nn.ReLU(), frame_conv(hidden, out_channels, 3))

    def forward(self, masks: Tensor) -> Tensor:
        return self.net(masks)


def masks_at(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Masks [B, 2, T, H, W] averaged down to ``size`` (soft: the fraction of each cell covered)."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    return F.adaptive_avg_pool3d(masks, (masks.shape[2], *size))


class OcclusionAwareTSMConv(nn.Module):
    """One layer of eqs. 5.11-5.13; without ``occlusion_gating`` a plain gated TSM convolution."""

    def __init__(self, in_channels: int, out_channels: int, cfg: GeneratorConfig, kernel_size: int = 3,
                 stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv = GatedTSMConv(in_channels, out_channels, kernel_size, stride, dilation,
                                 n=cfg.temporal_range, fold=cfg.fold, activation=cfg.activation,
                                 shift_gate=cfg.shift_gate)
        self.fusion = MaskFusion(out_channels, cfg.mask_hidden) if cfg.occlusion_gating else None

    def gate_offset(self, x: Tensor, masks: Tensor) -> Tensor | None:
        """f̄_t(M̂_occ_t, M̂_t) at this layer's output resolution, or None without occlusion gating."""
        if self.fusion is None:
            return None
        s = self.conv.stride
        return self.fusion(masks_at(masks, (x.shape[-2] // s, x.shape[-1] // s)))

    def gate_logits(self, x: Tensor, masks: Tensor) -> Tensor:
        """Gate_occ(t) of eq. 5.11 before the sigmoid (for inspection; forward computes it too)."""
        self.conv.check(x)
        return self.conv.gate_logits(x, self.gate_offset(x, masks))

    def forward(self, x: Tensor, masks: Tensor) -> Tensor:
        return self.conv(x, self.gate_offset(x, masks))


class ResidualBlock(nn.Module):
    """x + L2(L1(x)) with two occlusion-aware TSM layers: the residual shift of TSM [71]."""

    def __init__(self, channels: int, cfg: GeneratorConfig, dilation: int = 1) -> None:
        super().__init__()
        self.first = OcclusionAwareTSMConv(channels, channels, cfg, dilation=dilation)
        self.second = OcclusionAwareTSMConv(channels, channels, cfg, dilation=dilation)

    def forward(self, x: Tensor, masks: Tensor) -> Tensor:
        return x + self.second(self.first(x, masks), masks)


def _up(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")


class OcclusionAwareGenerator(nn.Module):
    """Fills the occluded part of a target object in a clip.

    Inputs, all [B, ·, T, H, W] with H, W multiples of 4: ``frames`` (3 channels, in [-1, 1]; the
    hole is zeroed here whatever it holds), masks of 1 channel in [0, 1]: ``visible`` (the target's
    visible part), ``occluded`` (M̂_occ: the hole to fill) and ``amodal`` (M̂: the target's full
    shape), and with ``use_propagated`` the flow-propagated frames (pixels warped into the hole in
    the propagation step, zeros where none arrived). Returns ``raw`` (the generator's clip) and
    ``inpainted`` (``raw`` inside the hole, the input frames elsewhere).
    """

    def __init__(self, cfg: GeneratorConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or GeneratorConfig()
        cfg.check()
        c = cfg.channels
        self.encoder = nn.ModuleList(
            [OcclusionAwareTSMConv(cfg.in_channels, c, cfg, kernel_size=5),
             OcclusionAwareTSMConv(c, 2 * c, cfg, stride=2)]
            + [ResidualBlock(2 * c, cfg) for _ in range(cfg.stage_blocks)]
            + [OcclusionAwareTSMConv(2 * c, 4 * c, cfg, stride=2)])
        self.middle = nn.ModuleList([ResidualBlock(4 * c, cfg, dilation=d) for d in cfg.dilations])
        self.up_half = OcclusionAwareTSMConv(4 * c, 2 * c, cfg)
        self.decoder_blocks = nn.ModuleList([ResidualBlock(2 * c, cfg) for _ in range(cfg.stage_blocks)])
        self.up_full = OcclusionAwareTSMConv(2 * c, c, cfg)
        self.to_rgb = frame_conv(c, FRAME_CHANNELS, 3)

    @property
    def temporal_receptive_field(self) -> int:
        """Frames on each side that can reach an output frame: n per TSM layer on the longest path
        (the gate and f̄ read only the current frame, so only the shifts count)."""
        layers = sum(1 for m in self.modules() if isinstance(m, OcclusionAwareTSMConv))
        return layers * self.cfg.temporal_range

    def mask_fusion_parameters(self) -> int:
        """Parameters of every f̄: the difference from the same generator without occlusion gating."""
        return sum(p.numel() for m in self.modules() if isinstance(m, MaskFusion) for p in m.parameters())

    def check_inputs(self, frames: Tensor, masks: dict[str, Tensor], propagated: Tensor | None) -> None:
        """InputError naming the first input whose shape does not fit the clip (:func:`check_clip_inputs`)."""
        check_clip_inputs(frames, masks, propagated, self.cfg.use_propagated)

    def forward(self, frames: Tensor, visible: Tensor, occluded: Tensor, amodal: Tensor,
                propagated: Tensor | None = None) -> dict[str, Tensor]:
        self.check_inputs(frames, {"visible": visible, "occluded": occluded, "amodal": amodal}, propagated)
        x, known, occluded, amodal = masked_input(frames, visible, occluded, amodal, propagated)
        gate_masks = torch.cat([occluded, amodal], dim=1)  # the two masks f̄ fuses
        for layer in self.encoder:
            x = layer(x, gate_masks)
        for block in self.middle:
            x = block(x, gate_masks)
        x = self.up_half(_up(x), gate_masks)
        for block in self.decoder_blocks:
            x = block(x, gate_masks)
        x = self.up_full(_up(x), gate_masks)
        return inpainting_output(torch.tanh(self.to_rgb(x)), known, occluded)
