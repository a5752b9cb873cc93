"""What a CPMask head parses: per-ROI mask and boundary maps on novel categories, and the affinity
of one pixel to every other pixel of its ROI (eq. 4.3 after the softmax).

A headless run (papermill, nbval) gets static figures instead of the widget; ``interactive``
decides, as in :mod:`instseg.viz.bilayer`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle
from torch import Tensor, nn
from torchvision.ops import roi_align

from instseg.viz.widgets import redraw_on


@dataclass
class ParsedRois:
    """A CPMask head's view of some ROIs: the image crops (resampled to the mask grid), the mask
    and boundary probabilities [R, 28, 28] and the affinity [R, hw, hw] on the h x w grid."""

    crops: Tensor  # [R, 3, 28, 28]
    mask: Tensor
    boundary: Tensor | None
    affinity: Tensor | None
    titles: list[str]

    @property
    def side(self) -> int:
        return round(self.affinity.shape[-1] ** 0.5) if self.affinity is not None else 0


@torch.no_grad()
def parse_rois(head: nn.Module, roi_features: Tensor, image: Tensor, boxes: Tensor, titles: Sequence[str]) -> ParsedRois:
    """Run ``head.parse`` (a :class:`~instseg.models.mask_heads.CPMaskHead`) on the ROIs ``boxes``
    of ``image`` (float [3, H, W]) whose pooled features are ``roi_features``."""
    if len(titles) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(titles)} titles")
    was_training = head.training
    head.eval()
    try:
        parsed = head.parse(roi_features)
    finally:
        head.train(was_training)
    rois = torch.cat([torch.zeros(len(boxes), 1), boxes.float()], dim=1)
    crops = roi_align(image[None].float(), rois, (28, 28), 1.0, aligned=True)
    boundary = parsed["boundary"][:, 0].sigmoid() if "boundary" in parsed else None
    return ParsedRois(crops, parsed["mask"][:, 0].sigmoid(), boundary, parsed.get("affinity"), list(titles))


def affinity_map(affinity: Tensor, row: int, col: int) -> np.ndarray:
    """Where pixel (row, col) of the ROI grid attends: its affinity row as a side x side map."""
    side = round(affinity.shape[-1] ** 0.5)
    if not (0 <= row < side and 0 <= col < side):
        raise ValueError(f"pixel ({row}, {col}) is outside the {side}x{side} grid")
    return affinity[row * side + col].reshape(side, side).float().cpu().numpy()


def _picture(crop: Tensor) -> np.ndarray:
    return crop.permute(1, 2, 0).clamp(0, 1).cpu().numpy()


def plot_parsed_rois(parsed: ParsedRois, title: str = "") -> plt.Figure:
    """One row per ROI: the crop, the mask probability, the boundary probability (if parsed)."""
    columns = [("ROI", None), ("mask", parsed.mask)] + ([("boundary", parsed.boundary)] if parsed.boundary is not None
                                                         else [])
    rows = len(parsed.titles)
    fig, axes = plt.subplots(rows, len(columns), figsize=(2.1 * len(columns), 2.2 * rows), squeeze=False)
    for r in range(rows):
        for c, (name, maps) in enumerate(columns):
            ax = axes[r, c]
            if maps is None:
                ax.imshow(_picture(parsed.crops[r]))
                ax.set_title(parsed.titles[r], fontsize=8)
            else:
                ax.imshow(maps[r].cpu().numpy(), cmap="jet", vmin=0, vmax=1)
                if r == 0:
                    ax.set_title(name, fontsize=8)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _draw_affinity(axes: Sequence[plt.Axes], parsed: ParsedRois, index: int, row: int, col: int) -> None:
    side = parsed.side
    scale = 28 / side
    axes[0].imshow(_picture(parsed.crops[index]))
    axes[0].add_patch(Rectangle((col * scale - 0.5, row * scale - 0.5), scale, scale, fill=False, edgecolor="white",
                                linewidth=2))
    axes[0].set_title(f"{parsed.titles[index]}: pixel ({row}, {col})", fontsize=8)
    axes[1].imshow(affinity_map(parsed.affinity[index], row, col), cmap="magma")
    axes[1].set_title("affinity of that pixel", fontsize=8)
    axes[2].imshow(parsed.mask[index].cpu().numpy(), cmap="jet", vmin=0, vmax=1)
    axes[2].set_title("mask", fontsize=8)
    for ax in axes:
        ax.axis("off")


def affinity_browser(parsed: ParsedRois, interactive: bool = True,
                     static_pixels: Mapping[str, tuple[int, int]] | None = None) -> Any:
    """A widget: pick a ROI and a pixel (row, column of the affinity grid), see where it attends.
    Headless: a static figure of the first ROI's centre pixel and a corner pixel (or
    ``static_pixels``: name -> (row, col))."""
    if parsed.affinity is None:
        raise ValueError("these ROIs were parsed by a head without the affinity unit")
    side = parsed.side
    if not interactive:
        pixels = dict(static_pixels or {"centre": (side // 2, side // 2), "corner": (0, 0)})
        fig, axes = plt.subplots(len(pixels), 3, figsize=(6.6, 2.3 * len(pixels)), squeeze=False)
        for r, (row, col) in enumerate(pixels.values()):
            _draw_affinity(axes[r], parsed, 0, row, col)
        fig.tight_layout()
        return fig
    import ipywidgets as widgets

    roi = widgets.Dropdown(options=[(t, k) for k, t in enumerate(parsed.titles)], value=0, description="ROI")
    row = widgets.IntSlider(min=0, max=side - 1, value=side // 2, description="row")
    col = widgets.IntSlider(min=0, max=side - 1, value=side // 2, description="column")
    out = widgets.Output()

    def redraw(*_: Any) -> None:
        with out:
            out.clear_output(wait=True)
            fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.6))
            _draw_affinity(axes, parsed, roi.value, row.value, col.value)
            plt.show()

    redraw_on((roi, row, col), redraw)
    return widgets.VBox([roi, widgets.HBox([row, col]), out])
