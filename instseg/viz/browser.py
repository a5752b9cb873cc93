"""An ipywidgets browser over a benchmark split: image slider, layer toggles, instance picker.

Executed headless (papermill, nbval, CI) a widget has no front end to draw it, so the same
call renders a static grid instead; ``interactive`` decides, the notebooks set it from a
parameter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from instseg.viz.draw import LAYERS, compose, image_layers
from instseg.viz.widgets import picked, redraw_on, set_choices, show_picture


def static_grid(gt: dict, image_dir: str | Path, image_ids: list[int], show: tuple[str, ...] = LAYERS) -> plt.Figure:
    """Each image with the chosen layers composed on it: the headless stand-in for the browser."""
    n = len(image_ids)
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 3.2), squeeze=False)
    for ax, image_id in zip(axes[0], image_ids):
        ax.imshow(compose(image_layers(gt, image_id, image_dir), show))
        ax.set_title(f"image {image_id}")
        ax.axis("off")
    fig.tight_layout()
    return fig


def benchmark_browser(gt: dict, image_dir: str | Path, interactive: bool = True, n_static: int = 4) -> Any:
    """A widget (interactive) or a static figure of the first ``n_static`` images."""
    image_ids = [im["id"] for im in gt["images"]]
    if not interactive:
        return static_grid(gt, image_dir, image_ids[:n_static])
    import ipywidgets as widgets

    slider = widgets.IntSlider(min=0, max=len(image_ids) - 1, value=0, description="image")
    toggles = {name: widgets.Checkbox(value=name in ("visible", "amodal"), description=name) for name in LAYERS}
    instance = widgets.Dropdown(options=[("all", -1)], value=-1, description="instance")
    out = widgets.Output()

    def redraw(*_: Any) -> None:
        layers = image_layers(gt, image_ids[slider.value], image_dir)
        set_choices(instance, [(f"{k}: cat {c}, occ {r:.2f}", k) for k, (c, r) in
                               enumerate(zip(layers["category_ids"], layers["occlusion_ratio"]))])
        shown = [name for name, box in toggles.items() if box.value]
        show_picture(out, compose(layers, shown, picked(instance)), f"image id {image_ids[slider.value]}")

    redraw_on((slider, instance, *toggles.values()), redraw)
    return widgets.VBox([slider, widgets.HBox(list(toggles.values())), instance, out])
