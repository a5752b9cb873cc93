"""What a bilayer head sees: Fig. 3.7-style heatmaps per ROI, and a browser over its predictions
layer by layer (final masks, occluder masks, occluder and occludee contours).

As in :mod:`instseg.viz.browser`, a headless run (papermill, nbval) gets a static figure instead
of the widget; ``interactive`` decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle
from torch import Tensor, nn

from instseg.models.mask_heads import run_head
from instseg.viz.draw import palette
from instseg.viz.widgets import picked, redraw_on, set_choices, show_picture

# head output -> column title, in the thesis' order: GCN-1 (occluder) then GCN-2 (occludee)
ROI_MAPS: dict[str, str] = {"occluder_boundary": "GCN-1 occluder contour", "occluder_mask": "GCN-1 occluder mask",
                            "boundary": "GCN-2 occludee contour", "mask": "GCN-2 occludee mask"}
# prediction layer -> fixed colour of heatmap layers (masks are tinted per instance instead)
MAP_COLOURS: dict[str, tuple[float, float, float]] = {"occluder_masks": (1.0, 0.1, 0.1),
                                                      "occludee_contours": (1.0, 1.0, 0.0),
                                                      "occluder_contours": (0.0, 1.0, 1.0)}
PREDICTION_LAYERS = ("masks", *MAP_COLOURS, "boxes")


@torch.no_grad()
def roi_maps(head: nn.Module, roi_features: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
    """Sigmoid probabilities [R, 28, 28] of every output of ``head`` on ``roi_features``, the extra
    maps included (heads compute those at inference only when asked)."""
    was_training = head.training
    head.eval()
    try:
        return {key: torch.sigmoid(logits[:, 0])
                for key, logits in run_head(head, roi_features, labels, return_maps=True).items()}
    finally:
        head.train(was_training)


def plot_bilayer_rois(image: Tensor, boxes: Tensor, maps: Mapping[str, Tensor], title: str = "") -> plt.Figure:
    """One row per ROI: the image with its box in red, then the squared heatmaps of the maps
    present (the thesis' Fig. 3.7 squares them to sharpen the display)."""
    keys = [k for k in ROI_MAPS if k in maps]
    if not keys:
        raise ValueError(f"no known map among {sorted(maps)}; expected some of {list(ROI_MAPS)}")
    arrays = {k: maps[k].reshape(-1, *maps[k].shape[-2:]).detach().float().cpu().numpy() for k in keys}
    for key, arr in arrays.items():
        if len(arr) != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but {len(arr)} maps under {key!r}")
    rows = len(boxes)
    fig, axes = plt.subplots(rows, 1 + len(keys), figsize=(2.2 * (1 + len(keys)), 2.3 * rows), squeeze=False)
    picture = image.permute(1, 2, 0).clamp(0, 1).cpu().numpy()
    for r, box in enumerate(boxes.tolist()):
        axes[r, 0].imshow(picture)
        axes[r, 0].add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False,
                                       edgecolor="red", linewidth=1.5))
        for c, key in enumerate(keys, start=1):
            axes[r, c].imshow(arrays[key][r] ** 2, cmap="jet", vmin=0, vmax=1)
            if r == 0:
                axes[r, c].set_title(ROI_MAPS[key], fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _outline(out: np.ndarray, box: Sequence[float], colour: np.ndarray) -> None:
    h, w = out.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, x2, y1, y2 = max(x1, 0), min(x2, w - 1), max(y1, 0), min(y2, h - 1)
    out[y1:y2 + 1, [x1, x2]] = colour
    out[[y1, y2], x1:x2 + 1] = colour


def compose_prediction(image: Tensor, pred: Mapping[str, Tensor], layers: Sequence[str], score_threshold: float = 0.5,
                       instance: int | None = None, mask_threshold: float = 0.5) -> np.ndarray:
    """[H, W, 3] floats in 0..1: the image with the chosen layers of the detections scoring at
    least ``score_threshold`` (or of detection ``instance`` alone). Masks are tinted per
    detection; occluder masks and contours are blended in by probability, one colour per kind."""
    out = image.permute(1, 2, 0).clamp(0, 1).cpu().numpy().astype(np.float32).copy()
    keep = torch.where(pred["scores"] >= score_threshold)[0].tolist()
    if instance is not None:
        keep = [instance]
    colours = palette(max(len(pred["scores"]), 1))
    for idx in keep:
        for layer in layers:
            if layer == "masks" and "masks" in pred:
                m = pred["masks"][idx, 0].cpu().numpy() >= mask_threshold
                out[m] = 0.5 * out[m] + 0.5 * colours[idx]
            elif layer in MAP_COLOURS and layer in pred:
                alpha = pred[layer][idx, 0].cpu().numpy().clip(0, 1)[..., None] * 0.7
                out = (1 - alpha) * out + alpha * np.asarray(MAP_COLOURS[layer], dtype=np.float32)
            elif layer == "boxes":
                _outline(out, pred["boxes"][idx].tolist(), colours[idx])
    return out.clip(0, 1)


def prediction_browser(images: Sequence[Tensor], predictions: Sequence[Mapping[str, Tensor]],
                       names: Sequence[str] | None = None, interactive: bool = True, n_static: int = 4,
                       score_threshold: float = 0.5) -> Any:
    """A widget over the predictions (image, score threshold, layer toggles, one detection), or,
    headless, a static figure: one row per image, one column per layer shown alone."""
    if len(images) != len(predictions):
        raise ValueError(f"{len(images)} images but {len(predictions)} predictions")
    names = list(names) if names is not None else [f"image {k}" for k in range(len(images))]
    available = [layer for layer in PREDICTION_LAYERS if layer == "boxes" or any(layer in p for p in predictions)]
    if not interactive:
        n = min(n_static, len(images))
        fig, axes = plt.subplots(n, len(available), figsize=(2.4 * len(available), 2.5 * n), squeeze=False)
        for r in range(n):
            for c, layer in enumerate(available):
                axes[r, c].imshow(compose_prediction(images[r], predictions[r], [layer], score_threshold))
                axes[r, c].set_title(f"{names[r]}: {layer}" if c == 0 else layer, fontsize=8)
                axes[r, c].axis("off")
        fig.tight_layout()
        return fig
    import ipywidgets as widgets

    slider = widgets.IntSlider(min=0, max=len(images) - 1, value=0, description="image")
    score = widgets.FloatSlider(min=0.0, max=1.0, step=0.05, value=score_threshold, description="score ≥")
    toggles = {layer: widgets.Checkbox(value=layer in ("masks", "boxes"), description=layer) for layer in available}
    pick = widgets.Dropdown(options=[("all", -1)], value=-1, description="detection")
    out = widgets.Output()

    def redraw(*_: Any) -> None:
        pred = predictions[slider.value]
        above = torch.where(pred["scores"] >= score.value)[0].tolist()
        set_choices(pick, [(f"{k}: label {int(pred['labels'][k])}, score {float(pred['scores'][k]):.2f}", k)
                           for k in above])
        shown = [layer for layer, box in toggles.items() if box.value]
        show_picture(out, compose_prediction(images[slider.value], pred, shown, score.value, picked(pick)),
                     names[slider.value])

    redraw_on((slider, score, pick, *toggles.values()), redraw)
    return widgets.VBox([widgets.HBox([slider, score]), widgets.HBox(list(toggles.values())), pick, out])
