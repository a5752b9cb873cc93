"""The PCAN model on a frozen detector's FPN maps: the frame-level module on a set of levels, ROI
features pooled from every level, QDTrack's embedding head, and the instance-level module (fg/bg
prototypes of the tracklet, attention maps, temporal segmentation head) that refines the
detector's coarse mask.

Why ROI features from every level: the image detector assigns ROIs to levels by size, and at our
128-pixel frames every object lands on P2, so a module on P3-P5 would change nothing a head reads.
PANet-style pooling (the box pooled from each level, averaged) lets every level count, and is the
same for every variant, the no-memory one included.

Why the embedding head reads the baseline's own input plus a change: the head starts from notebook
04's trained QDTrack-style head, which read the detector's 7x7 pooler on the raw maps. Its input
here is that same pooling plus what the frame module changed in the PANet-pooled ROI features
(read at 7x7), so at initialisation (the frame module the identity) PCAN links exactly as the
baseline does, and training learns only what the memory adds. With the PANet features alone the
head first had to relearn its input: the tracking term rose from the baseline's level and fell
back over hundreds of iterations, and that is what kept the validation loss from a plateau.

Why the instance EM runs on L2-normalised ROI features with temperature 0.1: there the GMM
responsibilities of eq. 5.3 are softmax(20 x.mu) up to a per-pixel constant, the released code's
E-step, and the scale does not depend on the detector's feature magnitudes.

Why the refined mask is a residual over the detector's coarse logits (the released head predicts
it from scratch): PCAN is the tracking baseline plus both modules, so at initialisation it should
segment as the baseline does; a head learning the whole mask anew had not caught up with the
detector's own masks after 1,000 clip iterations at ``cpu`` (its validation BCE stayed above the
coarse masks' 0.395), so every comparison of prototype settings read an undertrained head.

Why the instance EM back-propagates through its last iteration only (``instance_em_grad_iters``):
the EM is half of a training step's forward and more of its backward at ``cpu``; truncating it as
EMANet does leaves the values unchanged and made a step 1.2x faster (the gradient still reaches
the frame module through the last M-step).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import MultiScaleRoIAlign

from instseg.errors import InputError
from instseg.models.mask_heads.bcnet import BilayerMaskHead
from instseg.models.mask_heads.fcn import mask_head_loss
from instseg.video.layers.frame_attention import (FrameNonLocalAttention, FramePrototypicalAttention,
                                                  FrameTransformerAttention, RunningPrototypeBank)
from instseg.video.layers.instance_attention import TemporalSegmentationHead, attention_maps, instance_prototypes
from instseg.video.layers.roi_sampling import roi_align_bilinear
from instseg.video.models.trackers.base import config_from_dict
from instseg.video.models.inference import EMBED_ROI_SIZE
from instseg.video.models.trackers.embedding import QuasiDenseEmbedHead

LEVELS = {"p2": "0", "p3": "1", "p4": "2", "p5": "3"}  # torchvision FPN names by stride 4, 8, 16, 32
ROI_SIZE = 14
INSTANCE_TEMPERATURE = 0.1
ATTENTIONS = ("prototypical", "nonlocal", "transformer")
REFINES = ("temporal", "bilayer")


@dataclass(frozen=True)
class PCANConfig:
    """Architecture (params.yaml ``video.scales.<s>.pcan.model``, rows override it).

    ``memory_length`` counts the current frame: 1 is the frame module without memory (its
    aggregate is the frame's own values), the capacity twin of every longer memory."""

    levels: tuple[str, ...] = ("p3", "p4", "p5")
    memory_length: int = 4
    attention: str = "prototypical"
    num_prototypes: int = 30  # per memory frame and level, at most one per 4 positions of the level
    em_iters: int = 3
    key_channels: int = 16
    heads: int = 4  # transformer attention
    fg_prototypes: int = 10
    bg_prototypes: int = 10
    instance_em_iters: int = 6
    instance_em_grad_iters: int | None = 1  # iterations differentiated (None: all); see the module docstring
    momentum: float = 0.2  # eq. 5.8's update rate; 1: the current frame's prototypes, 0: the initial ones
    refine: str = "temporal"
    refine_channels: int = 32
    embed_conv_channels: int = 32
    embed_fc_channels: int = 256
    embed_dim: int = 128

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(self.levels))
        problems = []
        if unknown := [lv for lv in self.levels if lv not in LEVELS]:
            problems.append(f"unknown levels {unknown} (known: {sorted(LEVELS)})")
        if self.attention not in ATTENTIONS:
            problems.append(f"attention must be one of {ATTENTIONS}")
        if self.refine not in REFINES:
            problems.append(f"refine must be one of {REFINES}")
        if self.memory_length < 1 or not 0 <= self.momentum <= 1:
            problems.append("memory_length must be >= 1 and momentum in [0, 1]")
        if min(self.fg_prototypes, self.bg_prototypes, self.num_prototypes) < 0:
            problems.append("prototype numbers must be >= 0")
        if self.instance_em_grad_iters is not None and self.instance_em_grad_iters < 0:
            problems.append("instance_em_grad_iters must be >= 0 or null (every iteration)")
        if problems:
            raise InputError("; ".join(problems), record="pcan.model")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PCANConfig:
        return config_from_dict(cls, dict(values), "pcan.model")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def level_prototypes(num: int, positions: int) -> int:
    """Prototypes of one memory frame at a level of ``positions`` pixels: at most one per 4."""
    return max(1, min(num, positions // 4))


class _LevelModule(nn.Module):
    """One level's frame module; the prototypical one picks its prototype number per map size."""

    def __init__(self, config: PCANConfig, channels: int) -> None:
        super().__init__()
        self.config = config
        if config.attention == "prototypical":
            self.inner: nn.Module = FramePrototypicalAttention(channels, config.key_channels, config.num_prototypes,
                                                               config.em_iters)
        elif config.attention == "nonlocal":
            self.inner = FrameNonLocalAttention(channels, config.key_channels)
        else:
            self.inner = FrameTransformerAttention(channels, config.heads)

    def _sized(self, feature: Tensor) -> None:
        if isinstance(self.inner, FramePrototypicalAttention):
            self.inner.num_prototypes = level_prototypes(self.config.num_prototypes, feature.shape[-2] * feature.shape[-1])

    def memory_entry(self, feature: Tensor) -> Any:
        self._sized(feature)
        return self.inner.memory_entry(feature)

    def forward(self, feature: Tensor, memory: Sequence[Any]) -> Tensor:
        self._sized(feature)
        return self.inner(feature, memory)


class PCAN(nn.Module):
    """Frame module, ROI pooling, embedding head and instance-level refinement; the detector stays
    outside (its maps, boxes and coarse masks come from the cache or a live forward)."""

    def __init__(self, config: PCANConfig, channels: int) -> None:
        super().__init__()
        self.config, self.channels = config, channels
        self.frame = nn.ModuleDict({LEVELS[lv]: _LevelModule(config, channels) for lv in config.levels})
        self.baseline_pool = MultiScaleRoIAlign(list(LEVELS.values()), EMBED_ROI_SIZE, sampling_ratio=2)
        self.embed_head = QuasiDenseEmbedHead(channels, conv_channels=config.embed_conv_channels,
                                              fc_channels=config.embed_fc_channels, embed_dim=config.embed_dim)
        if config.refine == "temporal":
            self.refine_head: nn.Module = TemporalSegmentationHead(channels, config.refine_channels)
        else:
            self.refine_input = nn.Conv2d(channels + 3, channels, 3, padding=1)
            self.refine_head = BilayerMaskHead(channels, channels, num_convs=2)

    # frame level -------------------------------------------------------------------------------
    def memory_entry(self, levels: Mapping[str, Tensor]) -> dict[str, Any]:
        """What the memory keeps of a frame (maps [B, C, h, w] by FPN name): per module level."""
        return {name: module.memory_entry(levels[name].float()) for name, module in self.frame.items()}

    def enhance(self, levels: Mapping[str, Tensor], memory: Sequence[Mapping[str, Any]]) -> dict[str, Tensor]:
        """The frame's maps with the memory (at most ``memory_length - 1`` past frames) fused in at
        the module levels; other levels as they are."""
        memory = list(memory)[-(self.config.memory_length - 1):] if self.config.memory_length > 1 else []
        out = {name: f.float() for name, f in levels.items()}
        for name, module in self.frame.items():
            out[name] = module(out[name], [m[name] for m in memory])
        return out

    @torch.no_grad()
    def stream(self, frames: Iterable[Any], banks: Mapping[str, RunningPrototypeBank] | None = None
               ) -> Iterator[tuple[Any, dict[str, Tensor], dict[str, Tensor]]]:
        """A video's frames in order (anything with cached ``levels``: maps [C, h, w] by FPN name) as
        at test time: each frame with its maps (batched, float; the released code's ``banks``, restarted
        for the video, applied at their levels) and those maps enhanced by the memory of the frames
        before it. Only the memory is kept, so ``frames`` may be a live stream."""
        span = self.config.memory_length - 1
        for bank in (banks or {}).values():
            bank.reset()
        memory: list = []
        for frame in frames:
            levels = {k: v[None].float() for k, v in frame.levels.items()}
            for name, bank in (banks or {}).items():
                levels[name] = bank(levels[name])
            enhanced = self.enhance(levels, memory)
            if span:
                memory = (memory + [self.memory_entry(levels)])[-span:]
            yield frame, levels, enhanced

    # ROI level ---------------------------------------------------------------------------------
    def pool(self, levels: Mapping[str, Tensor], boxes: Sequence[Tensor], feature_size: tuple[int, int],
             frame_size: tuple[int, int]) -> Tensor:
        """[R, C, 14, 14]: each box (frame coordinates, one tensor per batch item) pooled from every
        level and averaged (RoIAlign, one sample per bin: :func:`roi_align_bilinear`)."""
        rois = _scaled(boxes, feature_size, frame_size)
        pooled = [roi_align_bilinear(f, rois, ROI_SIZE, f.shape[-2] / feature_size[0]) for f in levels.values()]
        return torch.stack(pooled).mean(0)

    def embed(self, raw: Mapping[str, Tensor], roi_features: Tensor, boxes: Sequence[Tensor],
              feature_size: tuple[int, int], frame_size: tuple[int, int]) -> Tensor:
        """QDTrack embeddings of the boxes: the baseline's input (the detector's 7x7 pooler on the
        ``raw`` maps) plus the frame module's change of the 14x14 ``roi_features`` (pooled from the
        enhanced maps by :meth:`pool`), read at 7x7; see the module docstring."""
        base = self.baseline_pool({k: v.float() for k, v in raw.items() if k in LEVELS.values()},
                                  _scaled(boxes, feature_size, frame_size), [feature_size] * len(boxes))
        change = roi_features - self.pool(raw, boxes, feature_size, frame_size)
        return self.embed_head(base + F.avg_pool2d(change, 2))

    def prototypes(self, roi_features: Tensor, coarse_logits: Tensor, init: tuple[Tensor, Tensor] | None = None
                   ) -> tuple[Tensor, Tensor]:
        """Foreground/background prototypes of each ROI by masked EM inside/outside its coarse mask."""
        c = self.config
        return instance_prototypes(F.normalize(roi_features, dim=1), _coarse14(coarse_logits).sigmoid(),
                                   c.fg_prototypes, c.bg_prototypes, c.instance_em_iters, INSTANCE_TEMPERATURE, init,
                                   grad_iters=c.instance_em_grad_iters)

    def maps(self, roi_features: Tensor, prototypes: tuple[Tensor, Tensor]) -> Tensor:
        """[R, 2, 14, 14] foreground/background attention maps of the ROIs onto ``prototypes``."""
        return attention_maps(F.normalize(roi_features, dim=1), prototypes[0], prototypes[1], INSTANCE_TEMPERATURE)

    def refine(self, roi_features: Tensor, maps: Tensor, coarse_logits: Tensor) -> dict[str, Tensor]:
        """The temporal segmentation head: logits [R, 1, 28, 28] under "mask", the head's output
        added to the detector's coarse logits (and the bilayer head's occluder outputs in training)."""
        coarse = _coarse14(coarse_logits)
        if self.config.refine == "temporal":
            outputs = {"mask": self.refine_head(roi_features, maps, coarse)[:, None]}
        else:
            x = F.relu(self.refine_input(torch.cat([roi_features, maps, coarse[:, None]], dim=1)))
            outputs = dict(self.refine_head(x))
        return outputs | {"mask": outputs["mask"] + coarse_logits.float()[:, None]}

    def refine_loss(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """BCE terms of the refine head's outputs (BCNet's weights for the bilayer head)."""
        if self.config.refine == "bilayer":
            return self.refine_head.loss(outputs, targets)
        return mask_head_loss(outputs, targets)


def _scaled(boxes: Sequence[Tensor], feature_size: tuple[int, int], frame_size: tuple[int, int]) -> list[Tensor]:
    """Boxes in frame coordinates -> float boxes in the coordinates of the maps' input size."""
    sy, sx = feature_size[0] / frame_size[0], feature_size[1] / frame_size[1]
    return [(b * torch.tensor([sx, sy, sx, sy], dtype=b.dtype, device=b.device)).float() for b in boxes]


def _coarse14(logits: Tensor) -> Tensor:
    """The detector's 28x28 coarse logits [R, 28, 28] at the ROI features' 14x14."""
    return F.avg_pool2d(logits.float()[:, None], 2)[:, 0]
