"""A toy video with exact masks and a random-init VOIN run of tiny models: what the ``instseg
inpaint`` tests and the memory benchmark run. Neither needs training or the benchmark data: the
pipeline's cost and bookkeeping do not depend on what the weights learned.

The video: a textured background, a disc (object 1) moving right and a square (object 2) moving
left in front of it, and a static grey bar in front of both, so that each object is partly hidden
(by the bar, and the disc by the square) for part of the video. The masks are instance-id maps:
``visible`` (what shows of each object) and ``amodal`` (each object's full outline; where the two
outlines overlap the front object's id, as one id map can hold only one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from instseg.video.voin.flow import FlowCompletionConfig, FlowCompletionNet
from instseg.video.voin.generator import GeneratorConfig, OcclusionAwareGenerator
from instseg.video.voin.pipeline import InpaintConfig
from instseg.video.voin.runs import save_voin_run
from instseg.video.voin.shape import ShapeCompletion, ShapeConfig

MASK_FORMATS = ("palette", "gray8", "gray16")


@dataclass
class ToyVideo:
    """Frames (L, H, W, 3) uint8 and id maps (L, H, W) uint8 (0: background, 1: disc, 2: square)."""

    frames: np.ndarray
    visible: np.ndarray
    amodal: np.ndarray


def toy_video(length: int, size: tuple[int, int] = (64, 64), seed: int = 0) -> ToyVideo:
    """The module docstring's video; objects sweep the frame once over ``length`` frames."""
    h, w = size
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[:h, :w]
    background = np.stack([96 + 64 * xs / w, 96 + 64 * ys / h, np.full((h, w), 128.0)], -1)
    background += rng.normal(0, 12, (h, w, 3))
    bar = np.abs(xs - w / 2) < max(w // 10, 1)
    r = max(min(h, w) // 6, 2)
    frames = np.empty((length, h, w, 3), np.uint8)
    visible = np.zeros((length, h, w), np.uint8)
    amodal = np.zeros((length, h, w), np.uint8)
    for t in range(length):
        p = t / max(length - 1, 1)
        disc = (ys - h * 0.4) ** 2 + (xs - (0.1 + 0.8 * p) * w) ** 2 < r ** 2
        square = (np.abs(ys - h * 0.6) < r) & (np.abs(xs - (0.9 - 0.8 * p) * w) < r)
        image = background.copy()
        image[disc] = (200, 60, 40) + 20 * np.sin(xs[disc, None] / 3.0)
        image[square] = (40, 80, 210) + 20 * np.cos(ys[square, None] / 2.0)
        image[bar] = (150, 150, 150)
        frames[t] = np.clip(image, 0, 255).astype(np.uint8)
        amodal[t][disc], amodal[t][square] = 1, 2
        visible[t] = np.where(bar, 0, amodal[t])
    return ToyVideo(frames, visible, amodal)


def write_id_masks(folder: str | Path, ids: np.ndarray, mask_format: str = "palette") -> list[Path]:
    """Id maps (L, H, W) as ``folder/00000.png ...``: ``palette`` (P mode, index = id), ``gray8``
    or ``gray16`` (single-channel instance ids)."""
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"mask_format must be one of {MASK_FORMATS}, not {mask_format!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t, m in enumerate(ids):
        if mask_format == "palette":
            image = Image.fromarray(m.astype(np.uint8), mode="P")
            image.putpalette([c for k in range(256) for c in ((k * 67) % 256, (k * 151) % 256, (k * 29) % 256)])
        else:
            image = Image.fromarray(m.astype(np.uint8 if mask_format == "gray8" else np.uint16))
        paths.append(folder / f"{t:05d}.png")
        image.save(paths[-1])
    return paths


def write_frames(folder: str | Path, frames: np.ndarray) -> list[Path]:
    """Frames (L, H, W, 3) uint8 as ``folder/00000.png ...``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{t:05d}.png" for t in range(len(frames))]
    for path, frame in zip(paths, frames):
        Image.fromarray(frame).save(path)
    return paths


def toy_run(run_dir: str | Path, seed: int = 0, shape: bool = True, flow: bool = True, channels: int = 4,
            use_propagated: bool = False, settings: InpaintConfig = InpaintConfig(shape_crop_size=32)) -> Path:
    """A random-init VOIN run of tiny models saved to ``run_dir``; returns ``run_dir``."""
    torch.manual_seed(seed)
    generator = OcclusionAwareGenerator(GeneratorConfig(channels=channels, mask_hidden=4, dilations=(2,),
                                                        stage_blocks=0, use_propagated=use_propagated))
    shape_model = ShapeCompletion(ShapeConfig(num_classes=3, channels=8, patch_sizes=(1, 2), layers=1,
                                              ffn_channels=8, decoder_channels=4, class_dim=2,
                                              fusion_layers=1)) if shape else None
    flow_net = FlowCompletionNet(FlowCompletionConfig(base_channels=4, depth=2)) if flow else None
    save_voin_run(run_dir, generator, shape_model, flow_net, settings)
    return Path(run_dir)
