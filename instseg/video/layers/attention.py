"""The attention baselines PCAN is compared with (Table 5.5): non-local attention over the whole
space-time memory (eq. 5.1) and multi-head attention (a transformer layer's), each explicit
(the [B, Q, M] attention matrix built, as the paper measured) or through
``torch.nn.functional.scaled_dot_product_attention`` (fused / flash kernels where available).

Same batch-first convention as :mod:`instseg.video.layers.prototypes`: queries [B, Q, C], memory
keys [B, M, C] and values [B, M, Cv], a memory ``mask`` [B, M] (True: attend).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def nonlocal_attention(queries: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None = None,
                       fused: bool = False) -> Tensor:
    """Eq. 5.1: softmax(q k^T / sqrt(C)) v over every memory position."""
    if fused:
        attn_mask = None if mask is None else mask.bool()[:, None, :]
        return F.scaled_dot_product_attention(queries, keys, values, attn_mask=attn_mask)
    logits = queries @ keys.transpose(1, 2) / math.sqrt(queries.shape[-1])
    if mask is not None:
        logits = logits.masked_fill(~mask.bool()[:, None, :], float("-inf"))
    return torch.softmax(logits, dim=-1) @ values


class MultiHeadAttention(nn.Module):
    """A transformer layer's cross-attention: projections, ``heads`` parallel scaled dot-product
    attentions, output projection; ``fused`` picks the SDPA kernel over the explicit matrix."""

    def __init__(self, channels: int, heads: int = 8, fused: bool = False) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels do not split into {heads} heads")
        self.heads, self.fused = heads, fused
        self.q, self.k, self.v, self.out = (nn.Linear(channels, channels) for _ in range(4))

    def _split(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2).reshape(b * self.heads, n, c // self.heads)

    def forward(self, queries: Tensor, memory: Tensor, mask: Tensor | None = None) -> Tensor:
        b, q, c = queries.shape
        heads_mask = None if mask is None else mask.repeat_interleave(self.heads, dim=0)
        y = nonlocal_attention(self._split(self.q(queries)), self._split(self.k(memory)), self._split(self.v(memory)),
                               heads_mask, self.fused)
        return self.out(y.view(b, self.heads, q, c // self.heads).transpose(1, 2).reshape(b, q, c))
