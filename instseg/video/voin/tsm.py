"""The temporal shift of TSM and the gated convolution that reads it (FFVI / LGTSM's building block).

Clips are [B, C, T, H, W] throughout the VOIN modules. A shift moves some channels along T so a
per-frame (2D) convolution mixes neighbouring frames at 2D cost; the gate, sigmoid(W_g * I), is a
learned soft mask that lets the layer ignore features computed over the hole.

``n`` generalises the one-frame shift to the "larger temporal receptive field n" of eq. 5.12: shift
group k (k = 1..n) is two blocks of ``fold`` channels, the first read from frame t-k, the second
from frame t+k. Clip ends are padded with zeros (no wrap-around: frame 0 has no past).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.errors import InputError

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,  # φ of eq. 5.13 as the thesis names it
    "leaky_relu": lambda x: F.leaky_relu(x, 0.2),  # FFVI's gated convolution
}


def default_fold(channels: int, n: int = 1) -> int:
    """Channels per shifted block: half the channels move in all (C/4 back and C/4 forward at n=1),
    at least one per block so that every layer really reaches frames t-n .. t+n."""
    return max(channels // (4 * n), 1)


def temporal_shift(x: Tensor, fold: int | None = None, n: int = 1) -> Tensor:
    """``x`` [B, C, T, H, W] with channels [2(k-1)f, (2k-1)f) taken from frame t-k and
    [(2k-1)f, 2kf) from frame t+k for k = 1..n (f = ``fold``), zeros where that frame is outside
    the clip; the remaining channels are unchanged."""
    if x.dim() != 5:
        raise InputError(f"temporal_shift expects [B, C, T, H, W], got shape {tuple(x.shape)}")
    if n < 1:
        raise InputError(f"temporal range n must be >= 1, got {n}")
    channels, length = x.shape[1], x.shape[2]
    fold = default_fold(channels, n) if fold is None else fold
    if fold < 0 or 2 * n * fold > channels:
        raise InputError(f"cannot shift 2*{n} blocks of {fold} channels out of {channels}")
    if fold == 0:
        return x
    parts = []
    for k in range(1, n + 1):
        start = 2 * (k - 1) * fold
        past = x[:, start:start + fold]
        future = x[:, start + fold:start + 2 * fold]
        # pad order for 5D tensors: (W, W, H, H, T_before, T_after)
        parts.append(F.pad(past, (0, 0, 0, 0, k, 0))[:, :, :length])  # out[t] = in[t-k]
        parts.append(F.pad(future, (0, 0, 0, 0, 0, k))[:, :, k:k + length])  # out[t] = in[t+k]
    parts.append(x[:, 2 * n * fold:])
    return torch.cat(parts, dim=1)


def frame_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
               dilation: int = 1) -> nn.Conv3d:
    """A per-frame 2D convolution on [B, C, T, H, W] (a 1 x k x k Conv3d: same weights and cost
    as Conv2d, no reshapes); 'same' padding, so stride 2 halves H and W (even sizes)."""
    pad = dilation * (kernel_size - 1) // 2
    return nn.Conv3d(in_channels, out_channels, (1, kernel_size, kernel_size), stride=(1, stride, stride),
                     padding=(0, pad, pad), dilation=(1, dilation, dilation))


class GatedTSMConv(nn.Module):
    """Out = sigmoid(W_g * I + extra) * φ(W_f * TSM(I)) on clips [B, C, T, H, W].

    ``shift_gate`` False (eq. 5.11) computes the gate from the current frame I_t only, True (FFVI)
    from the shifted input as the feature; ``gate_extra`` (same shape as the gate) is added before
    the sigmoid: VOIN's mask-fusion term f̄ enters there. ``activation`` None leaves the feature linear.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1, n: int = 1, fold: int | None = None,
                 activation: str | None = "leaky_relu", shift_gate: bool = False) -> None:
        super().__init__()
        if activation is not None and activation not in ACTIVATIONS:
            raise InputError(f"activation must be one of {sorted(ACTIVATIONS)} or None, not {activation!r}")
        fold = default_fold(in_channels, n) if fold is None else fold
        if fold < 0 or 2 * n * fold > in_channels:
            raise InputError(f"cannot shift 2*{n} blocks of {fold} channels out of {in_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.n, self.fold, self.stride = n, fold, stride
        self.shift_gate = shift_gate
        self.activation = activation
        self.feature = frame_conv(in_channels, out_channels, kernel_size, stride, dilation)  # W_f
        self.gate = frame_conv(in_channels, out_channels, kernel_size, stride, dilation)  # W_g

    def check(self, x: Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise InputError(f"expected a clip [B, {self.in_channels}, T, H, W], got shape {tuple(x.shape)}")

    def gate_logits(self, x: Tensor, gate_extra: Tensor | None = None, shifted: Tensor | None = None) -> Tensor:
        """The gate before its sigmoid: Σ W_g · I_t (+ ``gate_extra``), first term of eq. 5.11."""
        if self.shift_gate:
            x = temporal_shift(x, self.fold, self.n) if shifted is None else shifted
        gate = self.gate(x)
        return gate if gate_extra is None else gate + gate_extra

    def forward(self, x: Tensor, gate_extra: Tensor | None = None) -> Tensor:
        self.check(x)
        shifted = temporal_shift(x, self.fold, self.n)
        feature = self.feature(shifted)  # S_t, eq. 5.12
        if self.activation is not None:
            feature = ACTIVATIONS[self.activation](feature)
        return torch.sigmoid(self.gate_logits(x, gate_extra, shifted)) * feature  # eq. 5.13
