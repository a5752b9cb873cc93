"""Drawing instance layers (visible, amodal, occluder, boundary) over an image.

``compose`` returns a plain RGB array so it can be tested and reused by the widgets; the
matplotlib helpers only lay those arrays out.
"""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Iterable

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from instseg.data.coco_json import segmentation_to_mask
from instseg.data.occlusion import boundary_targets, occluder_masks_depth, occluder_masks_reference

LAYERS: tuple[str, ...] = ("visible", "amodal", "occluder", "boundary")


def palette(n: int, seed: int = 3) -> np.ndarray:
    """n distinct bright colours (float RGB in [0, 1])."""
    hues = (np.arange(n) * 0.61803398875 + np.random.default_rng(seed).random()) % 1.0
    return np.array([colorsys.hsv_to_rgb(h, 0.85, 1.0) for h in hues], dtype=np.float32).reshape(n, 3)


def image_layers(gt: dict, image_id: int, image_dir: str | Path, occluder_rule: str = "depth") -> dict[str, np.ndarray]:
    """Decoded layers of one image: ``image`` (HxWx3 uint8) and NxHxW bool stacks per layer.

    ``occluder_rule``: "depth" uses the benchmark's true depth order, "reference" the BCNet
    rule (box IoU > 0.05, no depth), which is what a model trained on plain COCO sees.
    """
    info = next(im for im in gt["images"] if im["id"] == image_id)
    h, w = info["height"], info["width"]
    anns = [a for a in gt["annotations"] if a["image_id"] == image_id and not a.get("iscrowd", 0)]
    image = np.asarray(Image.open(Path(image_dir) / info["file_name"]).convert("RGB"))
    visible = np.stack([segmentation_to_mask(a["segmentation"], h, w) for a in anns]).astype(bool) if anns \
        else np.zeros((0, h, w), bool)
    amodal = np.stack([segmentation_to_mask(a.get("amodal_segmentation", a["segmentation"]), h, w) for a in anns]
                      ).astype(bool) if anns else visible.copy()
    vis_t = torch.from_numpy(visible)
    boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns], dtype=torch.float32).reshape(-1, 4)
    if occluder_rule == "depth" and anns and "depth" in anns[0]:
        depth = torch.tensor([a["depth"] for a in anns])
        occluder = occluder_masks_depth(vis_t, depth, amodal_masks=torch.from_numpy(amodal), boxes=boxes)
    else:
        occluder = occluder_masks_reference(vis_t, boxes)
    boundary = boundary_targets(vis_t)
    return {"image": image, "visible": visible, "amodal": amodal, "occluder": occluder.numpy(),
            "boundary": boundary.numpy(), "category_ids": np.array([a["category_id"] for a in anns]),
            "occlusion_ratio": np.array([a.get("occlusion_ratio", np.nan) for a in anns])}


def _edges(mask: np.ndarray) -> np.ndarray:
    return boundary_targets(torch.from_numpy(mask[None]))[0].numpy() & mask


def compose(layers: dict[str, np.ndarray], show: Iterable[str] = ("visible",), instance: int | None = None,
            alpha: float = 0.5) -> np.ndarray:
    """RGB float image with the chosen layers drawn; ``instance`` restricts to one object."""
    out = layers["image"].astype(np.float32) / 255.0
    n = len(layers["visible"])
    colours = palette(max(n, 1))
    idx = range(n) if instance is None else [instance]
    show = set(show)
    unknown = show - set(LAYERS)
    if unknown:
        raise ValueError(f"unknown layers {sorted(unknown)}; known: {', '.join(LAYERS)}")
    for i in idx:
        if "visible" in show:
            m = layers["visible"][i]
            out[m] = (1 - alpha) * out[m] + alpha * colours[i]
        if "occluder" in show:
            m = layers["occluder"][i]
            out[m] = (1 - alpha) * out[m] + alpha * np.array([1.0, 0.0, 0.0])
    for i in idx:
        if "amodal" in show:
            out[_edges(layers["amodal"][i])] = colours[i] * 0.6 + 0.4
        if "boundary" in show:
            out[layers["boundary"][i]] = 1.0
    return np.clip(out, 0.0, 1.0)


def layer_panels(layers: dict[str, np.ndarray], instance: int | None = None, title: str = "") -> plt.Figure:
    """One row: the image, then each layer alone."""
    fig, axes = plt.subplots(1, 1 + len(LAYERS), figsize=(3 * (1 + len(LAYERS)), 3.2))
    axes[0].imshow(layers["image"])
    axes[0].set_title(title or "image")
    for ax, name in zip(axes[1:], LAYERS):
        ax.imshow(compose(layers, [name], instance))
        ax.set_title(name if instance is None else f"{name} (instance {instance})")
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig


def save_prediction_overlay(image: torch.Tensor, pred: dict[str, torch.Tensor], path: str | Path,
                            score_threshold: float = 0.5, mask_threshold: float = 0.5) -> Path:
    """A PNG of one image with its confident detections: masks tinted, boxes outlined."""
    import cv2

    keep = pred["scores"] >= score_threshold
    out = image.permute(1, 2, 0).numpy().astype(np.float32).copy()
    colours = palette(max(int(keep.sum()), 1))
    for k, idx in enumerate(torch.where(keep)[0].tolist()):
        if "masks" in pred:
            m = pred["masks"][idx, 0].numpy() >= mask_threshold
            out[m] = 0.5 * out[m] + 0.5 * colours[k]
        x1, y1, x2, y2 = (int(round(v)) for v in pred["boxes"][idx].tolist())
        cv2.rectangle(out, (x1, y1), (x2, y2), tuple(float(c) for c in colours[k]), 1)
    Image.fromarray((np.clip(out, 0, 1) * 255).astype(np.uint8)).save(path)
    return Path(path)
