"""PCAN's frame-level prototypical cross-attention module (eqs. 5.6-5.7), trainable end to end,
and the modules it is compared with in the same slot: non-local and transformer attention over
the memory (Table 5.5), and the released code's untrained test-time prototype bank.

Each memory frame is encoded by two parallel 3x3 convolutions into keys and values and condensed
into ``num_prototypes`` key/value prototypes by EM (eqs. 5.2-5.4), once, when it enters the memory.
The current frame's keys read every memory frame's prototypes (eq. 5.6); the readouts and the
current frame's own values are averaged per pixel with weights softmax(y_t . y_t^) (eq. 5.7), and
the aggregate is fused with the current features by a 1x1 convolution on their concatenation
(residual). Gradients reach both encoders through the readout and through the prototypes.

Why the fusion starts at zero (every attention type alike): the module is then the identity at
initialisation, as the non-local block's output layer is (Wang et al., 2018), so heads warm-started
from a trained tracker first read the detector's own maps, not maps shifted by a random fusion; the
encoders receive gradient from the first update of the fusion on.

``temperature`` is 2 sigma^2; its default, the key width, puts the logits of unit-variance keys
(squared distances ~ 2 x width) at order one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from instseg.video.layers.attention import MultiHeadAttention, nonlocal_attention
from instseg.video.layers.prototypes import em_prototypes, prototype_readout, value_prototypes

Prototypes = tuple[Tensor, Tensor]  # key prototypes [B, N, Ck], value prototypes [B, N, C]


def residual_fusion(channels: int) -> nn.Conv2d:
    """The 1x1 convolution fusing [features, aggregate] into a residual, zero at initialisation."""
    conv = nn.Conv2d(2 * channels, channels, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class FramePrototypicalAttention(nn.Module):
    """Aligns and aggregates a memory of past frames' features onto the current frame's."""

    def __init__(self, channels: int, key_channels: int = 64, num_prototypes: int = 30, em_iters: int = 3,
                 temperature: float | None = None) -> None:
        super().__init__()
        self.key = nn.Conv2d(channels, key_channels, 3, padding=1)
        self.value = nn.Conv2d(channels, channels, 3, padding=1)
        self.fuse = residual_fusion(channels)
        self.num_prototypes, self.em_iters = num_prototypes, em_iters
        self.temperature = float(temperature if temperature is not None else key_channels)

    def encode(self, feature: Tensor) -> tuple[Tensor, Tensor]:
        """Keys [B, HW, Ck] and values [B, HW, C] of a feature map [B, C, H, W]."""
        return self.key(feature).flatten(2).transpose(1, 2), self.value(feature).flatten(2).transpose(1, 2)

    def memory_entry(self, feature: Tensor) -> Prototypes:
        """One frame's key and value prototypes (eqs. 5.2-5.4): what the memory stores of it."""
        keys, values = self.encode(feature)
        mu, resp = em_prototypes(keys, self.num_prototypes, self.em_iters, self.temperature)
        return mu, value_prototypes(resp, values)

    def aggregate(self, feature: Tensor, memory: Sequence[Prototypes]) -> tuple[Tensor, Tensor]:
        """(aggregated features [B, HW, C], weights [B, T + 1, HW]: memory frames, then the current one)."""
        keys, values = self.encode(feature)
        readouts = [prototype_readout(keys, k, v, self.temperature) for k, v in memory] + [values]
        stacked = torch.stack(readouts, dim=1)  # [B, T + 1, HW, C]
        weights = torch.softmax((stacked * values.unsqueeze(1)).sum(-1), dim=1)  # eq. 5.7
        return (weights.unsqueeze(-1) * stacked).sum(1), weights

    def forward(self, feature: Tensor, memory: Sequence[Prototypes]) -> Tensor:
        """The current features [B, C, H, W] with the memory's aggregate fused in."""
        b, c, h, w = feature.shape
        aggregated, _ = self.aggregate(feature, memory)
        aggregated = aggregated.transpose(1, 2).reshape(b, c, h, w)
        return feature + self.fuse(torch.cat([feature, aggregated], dim=1))


class FrameNonLocalAttention(nn.Module):
    """The non-local baseline of Table 5.5 in the same slot: the current frame's keys attend to
    every position of the space-time memory and of the current frame (eq. 5.1), with the same key
    and value encoders and the same fusion as :class:`FramePrototypicalAttention`."""

    def __init__(self, channels: int, key_channels: int = 64, fused: bool = False) -> None:
        super().__init__()
        self.key = nn.Conv2d(channels, key_channels, 3, padding=1)
        self.value = nn.Conv2d(channels, channels, 3, padding=1)
        self.fuse = residual_fusion(channels)
        self.fused = fused

    def memory_entry(self, feature: Tensor) -> tuple[Tensor, Tensor]:
        """Every position's key and value: what a non-local memory stores of a frame."""
        return self.key(feature).flatten(2).transpose(1, 2), self.value(feature).flatten(2).transpose(1, 2)

    def forward(self, feature: Tensor, memory: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
        b, c, h, w = feature.shape
        keys, values = self.memory_entry(feature)
        memory_keys = torch.cat([k for k, _ in memory] + [keys], dim=1)
        memory_values = torch.cat([v for _, v in memory] + [values], dim=1)
        read = nonlocal_attention(keys, memory_keys, memory_values, fused=self.fused)
        return feature + self.fuse(torch.cat([feature, read.transpose(1, 2).reshape(b, c, h, w)], dim=1))


class FrameTransformerAttention(nn.Module):
    """The transformer baseline of Table 5.5: multi-head attention of the current frame's pixels
    onto the memory's and its own (a transformer layer's cross-attention, with its projections),
    fused as the other two."""

    def __init__(self, channels: int, heads: int = 4, fused: bool = False) -> None:
        super().__init__()
        self.attention = MultiHeadAttention(channels, heads, fused)
        self.fuse = residual_fusion(channels)

    def memory_entry(self, feature: Tensor) -> Tensor:
        """The frame's pixels as tokens [B, HW, C]."""
        return feature.flatten(2).transpose(1, 2)

    def forward(self, feature: Tensor, memory: Sequence[Tensor]) -> Tensor:
        b, c, h, w = feature.shape
        tokens = self.memory_entry(feature)
        read = self.attention(tokens, torch.cat(list(memory) + [tokens], dim=1))
        return feature + self.fuse(torch.cat([feature, read.transpose(1, 2).reshape(b, c, h, w)], dim=1))


class RunningPrototypeBank:
    """The released code's frame-level module (SysCV/pcan, test time only, untrained): prototypes
    of the raw features by EM with dot-product responsibilities (E: softmax(scale x.mu) over
    prototypes, normalised over pixels; M: mu = x.z, L2-normalised), kept as a running average over
    the frames seen so far, read as softmax(x.mu) mu and blended as (1 - weight) x + weight r.

    Stateful per video: ``reset()`` at its first frame. Ours, not the paper's: the paper trains
    per-frame prototypes and aggregates them by eq. 5.7; this is the ablation row for the shortcut.
    """

    def __init__(self, num: int = 30, iters: int = 3, scale: float = 20.0, weight: float = 0.25) -> None:
        self.num, self.iters, self.scale, self.weight = num, iters, scale, weight
        self.reset()

    def reset(self) -> None:
        self._bank: Tensor | None = None
        self._frames = 0

    def _fit(self, points: Tensor) -> Tensor:
        """[B, K, C] unit prototypes of unit ``points`` [B, M, C] by dot-product EM."""
        picks = torch.linspace(0, points.shape[1] - 1, min(self.num, points.shape[1])).round().long()
        mu = points[:, picks] if self._bank is None else self._bank
        for _ in range(self.iters):
            z = torch.softmax(self.scale * points @ mu.transpose(1, 2), dim=-1)
            z = z / z.sum(1, keepdim=True).clamp(min=1e-6)
            mu = nn.functional.normalize(z.transpose(1, 2) @ points, dim=-1)
        return mu

    def __call__(self, feature: Tensor) -> Tensor:
        b, c, h, w = feature.shape
        points = feature.flatten(2).transpose(1, 2)
        mu = self._fit(nn.functional.normalize(points, dim=-1))
        self._frames += 1
        self._bank = mu if self._bank is None else self._bank + (mu - self._bank) / self._frames
        read = torch.softmax(points @ self._bank.transpose(1, 2), dim=-1) @ self._bank
        return (1 - self.weight) * feature + self.weight * read.transpose(1, 2).reshape(b, c, h, w)
