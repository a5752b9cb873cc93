"""Non-local block: the "GCN layer" of BCNet (thesis eqs. 3.1-3.3).

Each of the H*W positions of a feature map is a graph node; the adjacency matrix is the row-wise
softmax of scaled dot products between 1x1-conv embeddings of the nodes, so every node mixes in
features from the whole ROI. Why this form: the thesis writes Z = sigma(A X W_g) + X with a
layer norm and ReLU as sigma, but the public reference code applies BatchNorm (no ReLU) to the
output projection before the residual add. We follow the code.
"""

from __future__ import annotations

from typing import Literal, overload

import torch
from torch import Tensor, nn


class NonLocalBlock(nn.Module):
    """Embedded dot-product non-local block with C^-1/2 scaling, BN on the output, residual add.

    ``channels`` is the width of the input and output; ``inter_channels`` the width of the
    query/key/value embeddings (the reference uses ``channels``). Query, key, value and output
    projections are 1x1 convs without bias (the output's bias would be cancelled by the BN).
    """

    def __init__(self, channels: int, inter_channels: int | None = None) -> None:
        super().__init__()
        inter = channels if inter_channels is None else inter_channels
        self.query = nn.Conv2d(channels, inter, 1, bias=False)
        self.key = nn.Conv2d(channels, inter, 1, bias=False)
        self.value = nn.Conv2d(channels, inter, 1, bias=False)
        self.out = nn.Conv2d(inter, channels, 1, bias=False)
        # eps as in the reference; BN weight keeps PyTorch's init of 1 as the reference does
        # (zero it to start the block as an identity).
        self.norm = nn.BatchNorm2d(channels, eps=1e-4)
        self.scale = inter**-0.5
        for conv in (self.query, self.key, self.value, self.out):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")

    def attention(self, x: Tensor) -> Tensor:
        """Adjacency matrix A of shape [B, H*W, H*W]; row i is where node i reads from."""
        q = self.query(x).flatten(2)  # B, C', N
        k = self.key(x).flatten(2)
        return torch.softmax(q.transpose(1, 2) @ k * self.scale, dim=-1)

    @overload
    def forward(self, x: Tensor, return_attention: Literal[False] = ...) -> Tensor: ...

    @overload
    def forward(self, x: Tensor, return_attention: Literal[True]) -> tuple[Tensor, Tensor]: ...

    def forward(self, x: Tensor, return_attention: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """``x`` [B, C, H, W] -> same shape; with ``return_attention`` also A [B, H*W, H*W]."""
        attn = self.attention(x)
        v = self.value(x).flatten(2)  # B, C', N
        relation = (v @ attn.transpose(1, 2)).unflatten(2, x.shape[2:])  # B, C', H, W
        y = x + self.norm(self.out(relation))
        return (y, attn) if return_attention else y
