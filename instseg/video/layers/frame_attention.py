"""PCAN's frame-level prototypical cross-attention module (eqs. 5.6-5.7), trainable end to end.

Each memory frame is encoded by two parallel 3x3 convolutions into keys and values and condensed
into ``num_prototypes`` key/value prototypes by EM (eqs. 5.2-5.4), once, when it enters the memory.
The current frame's keys read every memory frame's prototypes (eq. 5.6); the readouts and the
current frame's own values are averaged per pixel with weights softmax(y_t . y_t^) (eq. 5.7), and
the aggregate is fused with the current features by a 1x1 convolution on their concatenation
(residual). Gradients reach both encoders through the readout and through the prototypes.

``temperature`` is 2 sigma^2; its default, the key width, puts the logits of unit-variance keys
(squared distances ~ 2 x width) at order one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from instseg.video.layers.prototypes import em_prototypes, prototype_readout, value_prototypes

Prototypes = tuple[Tensor, Tensor]  # key prototypes [B, N, Ck], value prototypes [B, N, C]


class FramePrototypicalAttention(nn.Module):
    """Aligns and aggregates a memory of past frames' features onto the current frame's."""

    def __init__(self, channels: int, key_channels: int = 64, num_prototypes: int = 30, em_iters: int = 3,
                 temperature: float | None = None) -> None:
        super().__init__()
        self.key = nn.Conv2d(channels, key_channels, 3, padding=1)
        self.value = nn.Conv2d(channels, channels, 3, padding=1)
        self.fuse = nn.Conv2d(2 * channels, channels, 1)
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
