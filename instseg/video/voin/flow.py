"""VOIN's occlusion-aware flow completion (section 5.4.2): a U-Net that learns the flow *residual*.

The thesis: a U-Net encoder-decoder with skip connections takes "neighboring image frames,
initial flow, visible and amodal object masks" and predicts φ(x) = O − Ō, the desired flow minus
the initial (corrupted) flow, so O = Ō + φ(x); it is trained with an L1 loss on flow plus an
image-gradient loss, a Laplacian-pyramid loss [Bojanowski et al.] and an image-warping loss,
and the amodal contour guides it "by enforcing flow smoothness within the complete object
region, as flow fields are typically piecewise smooth, where gradients are small except along
the distinct object motion boundaries". It gives no equation and no weight for any term; ours:

* input of one flow a → b (each direction is its own item): frames a and b (corrupted, [0, 1]),
  Ō / ``flow_scale``, visible and amodal masks of a and b: 12 channels; output 2 channels,
  φ = ``flow_scale`` × the last convolution (which starts small, ×0.1 its default init);
* every supervised term is a weighted mean with pixel weight 1 + ``object_weight`` inside the
  amodal mask of frame a (the object is what VOIN completes; 5-10% of a frame here);
* L1: |O − O*| (mean of the two components); gradient: L1 between the finite differences of O and
  of O* along x and y (a pair's weight is the mean of its two pixels'); Laplacian pyramid: a
  5x5 binomial pyramid of ``lap_levels`` band-pass levels and the low-pass residual, each level's
  weighted mean |L^j(O) − L^j(O*)| summed with equal weights (Bojanowski's Σ_j 2^{2j}|·|_1 with
  per-level sums, divided by the pixel count); warping: |warp(clean b, O) − clean a| on the
  clean frames (the hallucinated content is known in training, never at test time), over pixels
  whose target lies inside frame b and whose exact flow passes a forward-backward check of
  ``warp_valid_px`` (pixels that b occludes have nothing to match);
* contour smoothness: mean |ΔO| over neighbouring pixel pairs that both lie inside the amodal mask
  of frame a. Pairs that straddle the amodal contour carry weight 0 (the motion boundary may be
  sharp there), and so do pairs outside the object (the text's smoothness is "within the complete
  object region"). First order as the text says ("gradients are small"), although the shapes'
  similarity motions give affine flow with gradients of ~0.06 per px under rotation.
* weights: L1 1, gradient 1, Laplacian 1, warping 1 (images in [0, 1]), smoothness 0.1;
* ``warped_input`` (off by default, not in the text): three more input channels, frame b warped
  back by Ō, so that the misalignment the initial flow leaves is visible to the convolutions.

Training goes through the engine's :class:`Trainer` (AdamW, 10% warmup, one 10× decay at 70%,
a validation loss on fixed held-out crops and the plateau check of both phases); batches are
crops of ``crop`` px centred on the target (jittered) of items drawn by the engine's sampler,
a pure function of the seed and iteration.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.engine import InfiniteBatchSampler, TrainConfig, derive_seed
from instseg.engine.plateau import PlateauCheck
from instseg.engine.trainer import Trainer, to_device
from instseg.engine.validation import ValidationLoss
from instseg.errors import InputError
from instseg.evaluation.inpainting import epe
from instseg.video.voin.data.samples import VoiSample
from instseg.video.voin.flow_targets import DIS_PRESET, initial_flows, sample_flows
from instseg.video.voin.params import voin_config
from instseg.video.voin.propagation import consistency_error

IN_CHANNELS = 12  # frames a, b (3 + 3), initial flow (2), visible a, b (2), amodal a, b (2)
LOSS_TERMS: tuple[str, ...] = ("l1", "gradient", "laplacian", "warp", "smooth")


@dataclass(frozen=True)
class FlowCompletionConfig:
    """The generator's size, loss weights and training schedule (module docstring for the reasons)."""

    base_channels: int = 16
    depth: int = 3  # down-samplings; inputs are padded to a multiple of 2**depth
    flow_scale: float = 4.0  # px: Ō is divided by it on input, the residual multiplied by it
    object_weight: float = 9.0  # pixel weight 1 + object_weight inside the amodal mask
    w_l1: float = 1.0
    w_gradient: float = 1.0
    w_laplacian: float = 1.0
    w_warp: float = 1.0
    w_smooth: float = 0.1
    lap_levels: int = 3
    warped_input: bool = False  # ours, beyond the text: also frame b warped back by Ō (FlowNet2-style)
    warp_valid_px: float = 1.0
    iters: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    crop: int = 64  # px, training crops around the target (None / 0: whole frames)
    jitter: int = 8  # px, random shift of the crop centre
    val_items: int = 32
    seed: int = 0

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FlowCompletionConfig:
        return voin_config(cls, values, "voin.flow")

    def check(self) -> None:
        if self.base_channels < 1 or self.depth < 1 or self.flow_scale <= 0 or self.lap_levels < 1:
            raise InputError("base_channels, depth, lap_levels must be >= 1 and flow_scale > 0", record="voin.flow")
        if self.crop and self.crop % (2 ** self.depth):
            raise InputError(f"crop {self.crop} is not a multiple of 2**depth = {2 ** self.depth}", record="voin.flow")
        if min(self.w_l1, self.w_gradient, self.w_laplacian, self.w_warp, self.w_smooth, self.object_weight) < 0:
            raise InputError("loss weights must be >= 0", record="voin.flow")

    def engine_config(self) -> TrainConfig:
        """AdamW with a 10% warmup and one 10x decay at 70%: the plateau check reads both phases."""
        decay = int(0.7 * self.iters)
        return TrainConfig(max_iters=self.iters, optimizer="adamw", lr=self.lr, batch_size=self.batch_size,
                           warmup_iters=max(1, self.iters // 10), lr_steps=(decay,) if decay else (), seed=self.seed,
                           weight_decay=1e-4, checkpoint_every=max(self.iters, 1))


# ----------------------------------------------------------------------------------------- model

def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.1, inplace=True))


class FlowCompletionNet(nn.Module):
    """U-Net (skip connections encoder → decoder) predicting the flow residual φ(x); returns
    ``{"flow": Ō + φ, "residual": φ}`` in pixels, (N, 2, H, W). No normalisation layers, so a
    sample's output never depends on the rest of its batch."""

    def __init__(self, cfg: FlowCompletionConfig = FlowCompletionConfig()) -> None:
        super().__init__()
        self.cfg = cfg  # what a VOIN run directory stores to rebuild the net
        self.flow_scale, self.depth, self.warped_input = cfg.flow_scale, cfg.depth, cfg.warped_input
        widths = [cfg.base_channels * 2 ** i for i in range(cfg.depth + 1)]
        self.enc = nn.ModuleList([_block(IN_CHANNELS + 3 * cfg.warped_input, widths[0])] +
                                 [_block(widths[i], widths[i + 1]) for i in range(cfg.depth)])
        self.dec = nn.ModuleList([_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(cfg.depth))])
        self.head = nn.Conv2d(widths[0], 2, 3, padding=1)
        with torch.no_grad():  # start near φ = 0, i.e. near the initial flow
            self.head.weight.mul_(0.1)
            self.head.bias.zero_()

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        x = model_input(batch, self.flow_scale, self.warped_input)
        h, w = x.shape[-2:]
        m = 2 ** self.depth
        pad = (0, (-w) % m, 0, (-h) % m)
        x = F.pad(x, pad, mode="replicate")
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for block in self.dec:
            skip = skips.pop()
            x = block(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip],
                                1))
        residual = self.flow_scale * self.head(x)[..., :h, :w]
        return {"flow": batch["init"] + residual, "residual": residual}


def model_input(batch: Mapping[str, Tensor], flow_scale: float, warped_input: bool = False) -> Tensor:
    """The 12 input channels of a batch dict (shapes checked: a mismatch is an InputError); with
    ``warped_input`` 3 more: frame b sampled at x + Ō(x), so the misalignment Ō leaves is in view."""
    want = {"frames": 6, "init": 2, "visible": 2, "amodal": 2}
    missing = [k for k in want if k not in batch]
    if missing:
        raise InputError(f"flow batch lacks {missing}")
    ref = batch["frames"]
    if ref.ndim != 4:
        raise InputError(f"frames must be (N, 6, H, W), got {tuple(ref.shape)}")
    for k, c in want.items():
        shape = tuple(batch[k].shape)
        if shape != (ref.shape[0], c, *ref.shape[2:]):
            raise InputError(f"{k} must be {(ref.shape[0], c, *ref.shape[2:])}, got {shape}")
    parts = [batch["frames"].float(), batch["init"].float() / flow_scale, batch["visible"].float(),
             batch["amodal"].float()]
    if warped_input:
        parts.append(warp(batch["frames"][:, 3:].float(), batch["init"].float())[0])
    return torch.cat(parts, 1)


# ---------------------------------------------------------------------------------------- losses

def _wmean(values: Tensor, weight: Tensor | None) -> Tensor:
    """Weighted mean of (N, C, H, W) values over everything, weights (N, 1, H, W) (channels averaged)."""
    if weight is None:
        return values.mean()
    weight = weight.expand_as(values)
    return (values * weight).sum() / weight.sum().clamp_min(1e-12)


def l1_flow_loss(pred: Tensor, gt: Tensor, weight: Tensor | None = None) -> Tensor:
    """Weighted mean |O − O*| (components averaged)."""
    return _wmean((pred - gt).abs(), weight)


def _dx(x: Tensor) -> Tensor:
    return x[..., :, 1:] - x[..., :, :-1]


def _dy(x: Tensor) -> Tensor:
    return x[..., 1:, :] - x[..., :-1, :]


def gradient_loss(pred: Tensor, gt: Tensor, weight: Tensor | None = None) -> Tensor:
    """L1 between the x and y finite differences of O and O* (the mean of both directions' means)."""
    wx = None if weight is None else 0.5 * (weight[..., :, 1:] + weight[..., :, :-1])
    wy = None if weight is None else 0.5 * (weight[..., 1:, :] + weight[..., :-1, :])
    return 0.5 * (_wmean((_dx(pred) - _dx(gt)).abs(), wx) + _wmean((_dy(pred) - _dy(gt)).abs(), wy))


_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: Tensor) -> Tensor:
    """5x5 binomial blur per channel, reflect padding (a constant stays that constant)."""
    c = x.shape[1]
    k = _BINOMIAL.to(x)
    kernel = (k[:, None] * k[None, :]).expand(c, 1, 5, 5)
    mode = "reflect" if min(x.shape[-2:]) > 2 else "replicate"
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode=mode), kernel, groups=c)


def laplacian_pyramid(x: Tensor, levels: int) -> list[Tensor]:
    """``levels`` band-pass levels (fine to coarse) and the low-pass residual: L^j = G_j − up(G_{j+1}),
    G_{j+1} = blur(G_j) sampled every 2nd pixel, up = bilinear to G_j's size."""
    out, g = [], x
    for _ in range(levels):
        if min(g.shape[-2:]) < 2:
            break
        low = _blur(g)[..., ::2, ::2]
        out.append(g - F.interpolate(low, size=g.shape[-2:], mode="bilinear", align_corners=False))
        g = low
    return out + [g]


def _pool_weight(weight: Tensor | None, shape: tuple[int, ...]) -> Tensor | None:
    return None if weight is None else F.adaptive_avg_pool2d(weight, shape[-2:])


def laplacian_loss(pred: Tensor, gt: Tensor, levels: int = 3, weight: Tensor | None = None) -> Tensor:
    """Σ_j (weighted mean |L^j(O) − L^j(O*)|) over the pyramid's levels and residual, equal weights."""
    diff = laplacian_pyramid(pred - gt, levels)  # the pyramid is linear
    return sum(_wmean(d.abs(), _pool_weight(weight, tuple(d.shape))) for d in diff)


def warp(image: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
    """``image`` (N, C, H, W) of frame b sampled at x + O(x) for every pixel x of frame a (bilinear,
    zeros outside; differentiable in both) and where those points lie inside frame b (N, 1, H, W):
    ``evaluation.inpainting.warp_back``'s convention, in torch."""
    n, _, h, w = image.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=flow.dtype, device=flow.device),
                            torch.arange(w, dtype=flow.dtype, device=flow.device), indexing="ij")
    x, y = xs + flow[:, 0], ys + flow[:, 1]
    grid = torch.stack([2.0 * x / max(w - 1, 1) - 1.0, 2.0 * y / max(h - 1, 1) - 1.0], dim=-1)
    warped = F.grid_sample(image.to(flow.dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    return warped, inside[:, None].to(flow.dtype)


def warping_loss(flow: Tensor, image_a: Tensor, image_b: Tensor, valid: Tensor | None = None,
                 weight: Tensor | None = None) -> Tensor:
    """Weighted mean |warp(b, O) − a| over pixels whose target lies in frame b (and ``valid``)."""
    warped, inside = warp(image_b, flow)
    keep = inside if valid is None else inside * valid.to(inside)
    keep = keep if weight is None else keep * weight
    return _wmean((warped - image_a.to(warped)).abs(), keep)


def contour_smoothness_loss(flow: Tensor, amodal: Tensor) -> Tensor:
    """Mean |ΔO| over neighbouring pixel pairs (x and y) both inside the amodal mask (N, 1, H, W);
    pairs across the amodal contour and outside the object are free. 0 when no pair is inside."""
    m = amodal.to(flow.dtype)
    px = m[..., :, 1:] * m[..., :, :-1]
    py = m[..., 1:, :] * m[..., :-1, :]
    total = (_dx(flow).abs() * px).sum() + (_dy(flow).abs() * py).sum()
    return total / (flow.shape[1] * (px.sum() + py.sum())).clamp_min(1.0)


def completion_losses(out: Mapping[str, Tensor], batch: Mapping[str, Tensor],
                      cfg: FlowCompletionConfig) -> dict[str, Tensor]:
    """The five weighted terms of one batch (names ``LOSS_TERMS``) from the model output and batch."""
    flow, gt = out["flow"], batch["gt"].to(out["flow"])
    amodal_a = batch["amodal"][:, :1].to(flow)
    weight = 1.0 + cfg.object_weight * amodal_a
    clean = batch["clean"].to(flow)
    return {"l1": cfg.w_l1 * l1_flow_loss(flow, gt, weight),
            "gradient": cfg.w_gradient * gradient_loss(flow, gt, weight),
            "laplacian": cfg.w_laplacian * laplacian_loss(flow, gt, cfg.lap_levels, weight),
            "warp": cfg.w_warp * warping_loss(flow, clean[:, :3], clean[:, 3:], batch["warp_valid"], weight),
            "smooth": cfg.w_smooth * contour_smoothness_loss(flow, amodal_a)}


class CompletionLoss:
    """The engine's ``loss_fn``: ``model(batch)`` then :func:`completion_losses`."""

    def __init__(self, cfg: FlowCompletionConfig) -> None:
        self.cfg = cfg

    def __call__(self, model: nn.Module, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return completion_losses(model(batch), batch, self.cfg)


# ------------------------------------------------------------------------------------------ data

@dataclass
class FlowClip:
    """A VOI sample with its flows: DIS on the corrupted frames (``init``) and the clean scene's
    exact flow (``exact``; None at inference), ``{"forward", "backward"}`` each (L-1, H, W, 2)
    (``flow_targets``)."""

    sample: VoiSample
    init: dict[str, np.ndarray]
    exact: dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        n, h, w = self.sample.corrupted.shape[:3]
        for name, flows in (("init", self.init), ("exact", self.exact)):
            if flows is None and name == "exact":
                continue
            for d in ("forward", "backward"):
                if d not in flows or flows[d].shape != (n - 1, h, w, 2):
                    raise InputError(f"{name}[{d!r}] must be {(n - 1, h, w, 2)}, got "
                                     f"{None if d not in flows else flows[d].shape}", record=self.name)

    @property
    def name(self) -> str:
        m = self.sample.meta
        return f"video {m.get('video_id', '?')} track {m.get('track_id', '?')} start {m.get('start', '?')}"


def flow_clip(sample: VoiSample, scenes: Mapping[int, dict[str, Any]], preset: int = DIS_PRESET) -> FlowClip:
    """A sample's :class:`FlowClip` (exact flow from its scene, DIS on its corrupted frames)."""
    return FlowClip(sample, initial_flows(sample.corrupted, preset), sample_flows(sample, scenes))


def flow_inputs(frames: np.ndarray, visible: np.ndarray, amodal: np.ndarray, init: Mapping[str, np.ndarray],
                k: int, direction: str) -> dict[str, np.ndarray]:
    """The model's inputs of one flow item (pair k, ``direction``) as channel-first float32 arrays,
    from a clip's frames (L, H, W, 3) uint8, masks (L, H, W) and initial flows: what inference has."""
    a, b = (k, k + 1) if direction == "forward" else (k + 1, k)
    return {"frames": _pair_frames(frames, a, b), "init": init[direction][k].transpose(2, 0, 1).astype(np.float32),
            "visible": np.stack([visible[a], visible[b]]).astype(np.float32),
            "amodal": np.stack([amodal[a], amodal[b]]).astype(np.float32)}


def _pair_frames(x: np.ndarray, a: int, b: int) -> np.ndarray:
    return np.concatenate([x[a], x[b]], -1).transpose(2, 0, 1).astype(np.float32) / 255.0


def _item_arrays(clip: FlowClip, k: int, direction: str, valid_px: float) -> dict[str, np.ndarray]:
    """One training item (k, direction): :func:`flow_inputs` and the clean frames, exact flow and
    masks the losses read."""
    if clip.exact is None:
        raise InputError("training items need the exact flow (FlowClip.exact)", record=clip.name)
    s = clip.sample
    item = flow_inputs(s.corrupted, s.visible, s.amodal, clip.init, k, direction)
    a, b = (k, k + 1) if direction == "forward" else (k + 1, k)
    other = "backward" if direction == "forward" else "forward"
    error, inside = consistency_error(clip.exact[direction][k], clip.exact[other][k])
    return dict(item, clean=_pair_frames(s.clean, a, b),
                gt=clip.exact[direction][k].transpose(2, 0, 1).astype(np.float32),
                occluded=s.occluded[a][None].astype(np.float32),
                warp_valid=(inside & (error < valid_px))[None].astype(np.float32))


def _crop(item: dict[str, np.ndarray], size: int, centre: tuple[float, float]) -> dict[str, np.ndarray]:
    h, w = item["frames"].shape[-2:]
    size_y, size_x = min(size, h), min(size, w)
    y0 = int(np.clip(round(centre[0] - size_y / 2), 0, h - size_y))
    x0 = int(np.clip(round(centre[1] - size_x / 2), 0, w - size_x))
    return {k: v[:, y0:y0 + size_y, x0:x0 + size_x] for k, v in item.items()}


def _collate(items: Sequence[dict[str, np.ndarray]]) -> dict[str, Tensor]:
    return {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}


class FlowItems:
    """Every flow item of a set of clips: (clip, pair k, direction), both directions of each pair.
    ``batch(indices, iteration)`` assembles them, cropped around the target when ``cfg.crop``
    (centre = the amodal centroid of frame a, shifted by up to ``jitter`` px drawn from
    ``derive_seed(seed, iteration, n)``; ``iteration=None``: no shift)."""

    def __init__(self, clips: Sequence[FlowClip], cfg: FlowCompletionConfig) -> None:
        if not clips:
            raise InputError("no clips to draw flow items from")
        self.clips, self.cfg = list(clips), cfg
        self.index = [(c, k, d) for c, clip in enumerate(self.clips) for k in range(clip.sample.length - 1)
                      for d in ("forward", "backward")]

    def __len__(self) -> int:
        return len(self.index)

    def item(self, i: int) -> dict[str, np.ndarray]:
        c, k, d = self.index[i]
        return _item_arrays(self.clips[c], k, d, self.cfg.warp_valid_px)

    def batch(self, indices: Sequence[int], iteration: int | None = None) -> dict[str, Tensor]:
        items = []
        for n, i in enumerate(indices):
            item = self.item(i)
            if self.cfg.crop:
                ys, xs = np.nonzero(item["amodal"][0])
                centre = (float(ys.mean()), float(xs.mean())) if ys.size else \
                    (item["frames"].shape[1] / 2, item["frames"].shape[2] / 2)
                if iteration is not None and self.cfg.jitter:
                    shift = np.random.default_rng(derive_seed(self.cfg.seed, iteration, n)).integers(
                        -self.cfg.jitter, self.cfg.jitter + 1, size=2)
                    centre = (centre[0] + shift[0], centre[1] + shift[1])
                item = _crop(item, self.cfg.crop, centre)
            items.append(item)
        return _collate(items)


class ItemBatches:
    """The engine's batch source: iteration i gets ``batch_size`` items of an epoch-wise permutation."""

    def __init__(self, items: FlowItems, batch_size: int, seed: int) -> None:
        self.items = items
        self.sampler = InfiniteBatchSampler(len(items), batch_size, seed)

    def __call__(self, start: int) -> Iterator[dict[str, Tensor]]:
        for iteration in itertools.count(start):
            yield self.items.batch(list(self.sampler.global_batch(iteration)), iteration)


def fixed_indices(count: int, total: int) -> list[int]:
    """``count`` item indices spread evenly over ``total``: the validation items."""
    return [int(i) for i in np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(int))]


class FlowValidation(ValidationLoss):
    """ValidationLoss over fixed batch dicts (the base class reads sizes from tuple batches)."""

    @torch.no_grad()
    def measure(self) -> float:
        was_training = self.model.training
        self.model.eval()
        device = self.device or next(self.model.parameters()).device
        total, count = 0.0, 0
        for batch in self.batches:
            size = len(batch["frames"])
            total += float(sum(self.loss_fn(self.model, to_device(batch, device)).values())) * size
            count += size
        self.model.train(was_training)
        return total / max(count, 1)


# ------------------------------------------------------------------------------ train / evaluate

@dataclass
class FlowRun:
    """A trained generator and what its training measured."""

    model: FlowCompletionNet
    seconds: float
    plateau: PlateauCheck
    val_curve: list[tuple[int, float]]
    final_loss: dict[str, float]


def train_flow_completion(cfg: FlowCompletionConfig, train: Sequence[FlowClip], val: Sequence[FlowClip],
                          out_dir: str | Path | None = None, resume: bool = False,
                          device: str | torch.device | None = None) -> FlowRun:
    """A fresh generator (initialised from ``cfg.seed``) trained on the flow items of ``train``
    through the engine, its validation loss measured on fixed (centred) crops of ``val``."""
    cfg.check()
    torch.manual_seed(derive_seed(cfg.seed, 0xF10))
    model = FlowCompletionNet(cfg)
    engine = cfg.engine_config()
    train_items, val_items = FlowItems(train, cfg), FlowItems(val, cfg)
    picks = fixed_indices(cfg.val_items, len(val_items))
    val_batches = [val_items.batch(picks[i:i + cfg.batch_size]) for i in range(0, len(picks), cfg.batch_size)]
    loss_fn = CompletionLoss(cfg)
    val_path = None if out_dir is None else Path(out_dir) / "val_loss.csv"
    validation = FlowValidation(model, val_batches, cfg.iters, val_path, loss_fn=loss_fn)
    start = time.perf_counter()
    summary = Trainer(model, None, engine, out_dir, loss_fn=loss_fn, callbacks=[validation], device=device,
                      batches=ItemBatches(train_items, cfg.batch_size, cfg.seed),
                      run_settings={k: getattr(cfg, k) for k in ("base_channels", "depth", "flow_scale",
                                                                 "warped_input")}
                      ).train(resume=resume)
    model.eval()
    return FlowRun(model, time.perf_counter() - start,
                   validation.check(phase_end=max(engine.lr_steps, default=None)), validation.curve(),
                   {k: float(v) for k, v in summary["losses"].items()})


@torch.no_grad()
def complete_clip_flows(model: FlowCompletionNet, frames: np.ndarray, visible: np.ndarray, amodal: np.ndarray,
                        init: Mapping[str, np.ndarray], chunk: int = 8) -> dict[str, np.ndarray]:
    """The generator's completed flow of a clip's full frames (L, H, W, 3) uint8 from its masks
    (L, H, W) and initial flows (``flow_targets`` convention), both directions, (L-1, H, W, 2)."""
    if len(frames) < 2:
        raise InputError(f"a flow needs at least 2 frames, got {len(frames)}")
    model.eval()
    device = next(model.parameters()).device
    items = [(k, d) for k in range(len(frames) - 1) for d in ("forward", "backward")]
    out: dict[str, list[np.ndarray]] = {"forward": [], "backward": []}
    for s in range(0, len(items), chunk):
        part = items[s:s + chunk]
        batch = _collate([flow_inputs(frames, visible, amodal, init, k, d) for k, d in part])
        flow = model(to_device(batch, device))["flow"].cpu().numpy().transpose(0, 2, 3, 1)
        for (_, d), f in zip(part, flow):
            out[d].append(f)
    return {d: np.stack(v) for d, v in out.items()}


def complete_flows(model: FlowCompletionNet, clip: FlowClip, chunk: int = 8) -> dict[str, np.ndarray]:
    """:func:`complete_clip_flows` of a VOI sample's corrupted frames (only the model's inputs are read)."""
    s = clip.sample
    return complete_clip_flows(model, s.corrupted, s.visible, s.amodal, clip.init, chunk)


def evaluate_flow(model: FlowCompletionNet | None, clips: Sequence[FlowClip]) -> dict[str, float]:
    """EPE against the exact flow over all flow items of ``clips`` (both directions, pixels pooled):
    on the target's amodal region of the source frame (``epe_object``) and on its occluded part
    (``epe_occluded``), for the generator (``model_*``; skipped when ``model`` is None) and DIS
    alone (``dis_*``)."""
    if not clips:
        raise InputError("no clips to evaluate")
    if any(c.exact is None for c in clips):
        raise InputError("evaluation needs the exact flow of every clip")
    gt, dis, pred, amodal, occluded = [], [], [], [], []
    for clip in clips:
        done = complete_flows(model, clip) if model is not None else None
        s = clip.sample
        for d, src in (("forward", slice(0, -1)), ("backward", slice(1, None))):
            gt.append(clip.exact[d])
            dis.append(clip.init[d])
            amodal.append(s.amodal[src])
            occluded.append(s.occluded[src])
            if done is not None:
                pred.append(done[d])
    gt_a, am, oc = np.concatenate(gt), np.concatenate(amodal), np.concatenate(occluded)
    out = {"pairs": int(len(gt_a)), "dis_epe_object": epe(np.concatenate(dis), gt_a, am),
           "dis_epe_occluded": epe(np.concatenate(dis), gt_a, oc)}
    if pred:
        out.update(model_epe_object=epe(np.concatenate(pred), gt_a, am),
                   model_epe_occluded=epe(np.concatenate(pred), gt_a, oc))
    return out
