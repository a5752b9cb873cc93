"""An STTN-like inpainter (Zeng et al., ECCV 2020), the Table 5.8 baseline that uses no flow.

STTN fills a clip's holes by attention over patches of *all* its frames at once: a per-frame conv
encoder (stride 4), transformer blocks whose heads each cut the feature maps into non-overlapping
patches of their own size (one token = one patch of one frame, its channels × p × p values), a
per-frame conv decoder. As STTN, key patches that are mostly hole (more than ``key_hole_fraction``
of their pixels) are not attended, no positional encoding is added (the convolutions place things),
and there are no normalisation layers. Ours is small (width ``4 * channels`` at 1/4 resolution)
and reads the inputs of VOIN's generator (:mod:`clip_inputs`: hole zeroed, the visible mask
concatenated as the paper adapts its baselines), with no flow.

Capacity is *not* matched to VOIN's generator, as in the paper (which compares published models).
At ``channels`` 12 (the same widths, 12 / 24 / 48, as VOIN's generator at ``channels`` 12) the
default has 165,831 parameters, VOIN's generator 424,719 (347,079 without occlusion gating, the
LGTSM-like one): a block costs 69,408 (its 3x3 output and feed-forward convolutions), so 6 blocks
(443,463) would match it within 5%.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.errors import InputError
from instseg.video.voin.clip_inputs import FRAME_CHANNELS, MASK_NAMES, check_clip_inputs, inpainting_output, \
    masked_input
from instseg.video.voin.params import voin_config
from instseg.video.voin.tsm import frame_conv

STRIDE = 4  # the encoder's down-sampling: patch sizes count feature cells of 4 x 4 pixels
_SLOPE = 0.2  # LeakyReLU slope of STTN's convolutions


@dataclass(frozen=True)
class STTNConfig:
    """STTN-like settings; defaults are the cpu scale (a 64 px crop's 16 x 16 feature map splits
    into whole patches of every size)."""

    channels: int = 12  # width at full resolution; 2x at 1/2, 4x (the transformer's width) at 1/4
    blocks: int = 2  # spatio-temporal transformer blocks
    patch_sizes: tuple[int, ...] = (2, 4, 8)  # one head each, in feature cells; each head gets 4c / heads channels
    key_hole_fraction: float | None = 0.5  # keys over more hole than this are masked out (STTN); None: none

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> "STTNConfig":
        return voin_config(cls, params, "voin.sttn")

    def check(self) -> None:
        if self.channels < 1 or self.blocks < 1 or not self.patch_sizes:
            raise InputError("need channels >= 1, blocks >= 1 and at least one patch size", record="voin.sttn")
        if any(p < 1 for p in self.patch_sizes):
            raise InputError(f"patch sizes must be >= 1, got {self.patch_sizes}", record="voin.sttn")
        if self.width % len(self.patch_sizes):
            raise InputError(f"the transformer width 4 x {self.channels} = {self.width} does not split into "
                             f"{len(self.patch_sizes)} heads", record="voin.sttn")
        if self.key_hole_fraction is not None and not 0.0 <= self.key_hole_fraction <= 1.0:
            raise InputError(f"key_hole_fraction must lie in [0, 1] or be None, got {self.key_hole_fraction}",
                             record="voin.sttn")

    @property
    def width(self) -> int:
        return 4 * self.channels

    @property
    def in_channels(self) -> int:
        return FRAME_CHANNELS + len(MASK_NAMES)


def patch_tokens(x: Tensor, patch: int) -> Tensor:
    """[B, C, T, H, W] → [B, T·(H/p)·(W/p), C·p·p]: one token per p x p patch of each frame,
    frames first, then patch rows, then patch columns."""
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 3, 5, 1, 4, 6).reshape(b, t * (h // patch) * (w // patch), c * patch * patch)


def patch_image(tokens: Tensor, patch: int, shape: tuple[int, ...]) -> Tensor:
    """The inverse of :func:`patch_tokens` for a clip of ``shape`` [B, C, T, H, W]."""
    b, c, t, h, w = shape
    x = tokens.reshape(b, t, h // patch, w // patch, c, patch, patch)
    return x.permute(0, 4, 1, 2, 5, 3, 6).reshape(b, c, t, h, w)


def patch_attention(query: Tensor, key: Tensor, value: Tensor, patch: int, keep: Tensor | None = None) -> Tensor:
    """Softmax attention of every p x p patch of every frame over all patches of the clip
    ([B, C, T, H, W] each, H and W multiples of p; scale 1/√(C·p·p)). ``keep`` [B, tokens] bool
    marks the keys that may be attended; where a clip keeps none, all are attended."""
    if keep is not None:
        keep = (keep | ~keep.any(dim=1, keepdim=True))[:, None, :]
    out = F.scaled_dot_product_attention(patch_tokens(query, patch), patch_tokens(key, patch),
                                         patch_tokens(value, patch), attn_mask=keep)
    return patch_image(out, patch, tuple(query.shape))


class SpatioTemporalBlock(nn.Module):
    """x + O(heads), then + a 2-layer conv feed-forward: STTN's transformer block. Head k reads
    channel chunk k of the 1x1 q/k/v embeddings, with patches of ``patch_sizes[k]`` cells."""

    def __init__(self, width: int, patch_sizes: tuple[int, ...], key_hole_fraction: float | None) -> None:
        super().__init__()
        self.patch_sizes, self.key_hole_fraction = patch_sizes, key_hole_fraction
        self.query, self.key, self.value = (frame_conv(width, width, 1) for _ in range(3))
        self.output = nn.Sequential(frame_conv(width, width, 3), nn.LeakyReLU(_SLOPE))
        self.feed_forward = nn.Sequential(frame_conv(width, width, 3), nn.LeakyReLU(_SLOPE),
                                          frame_conv(width, width, 3), nn.LeakyReLU(_SLOPE))

    def keys_kept(self, hole: Tensor, patch: int) -> Tensor | None:
        """[B, tokens] bool: the patches (at full resolution, ``hole`` [B, 1, T, H, W]) whose hole
        fraction is at most ``key_hole_fraction``; None when nothing is masked."""
        if self.key_hole_fraction is None:
            return None
        cell = STRIDE * patch
        return (F.avg_pool3d(hole, (1, cell, cell)) <= self.key_hole_fraction).flatten(1)

    def forward(self, x: Tensor, hole: Tensor) -> Tensor:
        heads = len(self.patch_sizes)
        chunks = zip(self.patch_sizes, *(f(x).chunk(heads, dim=1) for f in (self.query, self.key, self.value)))
        attended = torch.cat([patch_attention(q, k, v, p, self.keys_kept(hole, p)) for p, q, k, v in chunks], dim=1)
        x = x + self.output(attended)
        return x + self.feed_forward(x)


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(frame_conv(in_channels, out_channels, 3, stride), nn.LeakyReLU(_SLOPE))


class STTNInpainter(nn.Module):
    """Fills the occluded part of a target object in a clip with spatio-temporal patch attention.

    The call of :class:`~instseg.video.voin.generator.OcclusionAwareGenerator` (same tensors, same
    ``raw`` / ``inpainted`` outputs); H and W must be multiples of 4 x every patch size, and
    ``propagated`` must be None (this baseline uses no flow).
    """

    def __init__(self, cfg: STTNConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or STTNConfig()
        cfg.check()
        c = cfg.channels
        self.encoder = nn.Sequential(_conv(cfg.in_channels, c), _conv(c, 2 * c, 2), _conv(2 * c, cfg.width, 2))
        self.blocks = nn.ModuleList([SpatioTemporalBlock(cfg.width, cfg.patch_sizes, cfg.key_hole_fraction)
                                     for _ in range(cfg.blocks)])
        up = nn.Upsample(scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        self.decoder = nn.Sequential(up, _conv(cfg.width, 2 * c), up, _conv(2 * c, c), frame_conv(c, FRAME_CHANNELS, 3))

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def check_inputs(self, frames: Tensor, masks: dict[str, Tensor], propagated: Tensor | None) -> None:
        """:func:`check_clip_inputs` without flow, and frames that split into whole patches."""
        if propagated is not None:
            raise InputError("the STTN-like baseline uses no flow: propagated must be None")
        check_clip_inputs(frames, masks, None, use_propagated=False)
        h, w = frames.shape[-2:]
        for p in self.cfg.patch_sizes:
            if h % (STRIDE * p) or w % (STRIDE * p):
                raise InputError(f"frames of {h}x{w} do not split into patches of {p} feature cells "
                                 f"({STRIDE * p} px): H and W must be multiples of {STRIDE * p}")

    def forward(self, frames: Tensor, visible: Tensor, occluded: Tensor, amodal: Tensor,
                propagated: Tensor | None = None) -> dict[str, Tensor]:
        self.check_inputs(frames, {"visible": visible, "occluded": occluded, "amodal": amodal}, propagated)
        x, known, occluded, _ = masked_input(frames, visible, occluded, amodal)
        x = self.encoder(x)
        for block in self.blocks:
            x = block(x, occluded)
        return inpainting_output(torch.tanh(self.decoder(x)), known, occluded)
