"""Before / after / ground truth: a VOI sample's frames side by side, as a widget or a static strip."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from instseg.video.voin.data import VoiSample
from instseg.video.voin.inpaint_data import sample_name

OUTLINE = np.array([255, 255, 0], dtype=np.uint8)


def _outlined(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The frame with the hole's outline drawn (1 px, yellow): where a method painted."""
    edge = mask & ~(np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1))
    out = frame.copy()
    out[edge] = OUTLINE
    return out


def panels(sample: VoiSample, predictions: Mapping[str, np.ndarray], t: int) -> list[tuple[str, np.ndarray]]:
    """Frame ``t``: the input (hole outlined), each method's result, the clean ground truth."""
    return ([("input", _outlined(sample.corrupted[t], sample.occluded[t]))]
            + [(name, pred[t]) for name, pred in predictions.items()] + [("ground truth", sample.clean[t])])


def comparison_strip(sample: VoiSample, predictions: Mapping[str, np.ndarray], frames: Sequence[int]) -> plt.Figure:
    """Rows: frames; columns: input, methods, ground truth."""
    names = [n for n, _ in panels(sample, predictions, 0)]
    fig, axes = plt.subplots(len(frames), len(names), figsize=(1.6 * len(names), 1.6 * len(frames)), squeeze=False)
    for r, t in enumerate(frames):
        for c, (name, image) in enumerate(panels(sample, predictions, t)):
            ax = axes[r][c]
            ax.imshow(image)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=8)
            if c == 0:
                ax.set_ylabel(f"t={t}", fontsize=8)
    fig.suptitle(sample_name(sample), fontsize=9)
    fig.tight_layout()
    return fig


def inpainting_browser(samples: Sequence[VoiSample], predictions: Sequence[Mapping[str, np.ndarray]],
                       interactive: bool = True, n_static: int = 4) -> Any:
    """A sample picker and a frame slider over ``samples`` (``predictions[i]``: method -> frames of
    sample i); headless, the first sample's :func:`comparison_strip` of ``n_static`` frames."""
    if not interactive:
        first = samples[0]
        frames = sorted(set(np.linspace(0, first.length - 1, n_static).round().astype(int).tolist()))
        return comparison_strip(first, predictions[0], frames)
    import ipywidgets as widgets
    from IPython.display import display

    from instseg.viz.widgets import redraw_on

    picker = widgets.Dropdown(options=[(sample_name(s), i) for i, s in enumerate(samples)], value=0,
                              description="sample")
    slider = widgets.IntSlider(min=0, max=samples[0].length - 1, value=0, description="frame")
    out = widgets.Output()

    def redraw(*_: Any) -> None:
        sample = samples[picker.value]
        slider.max = sample.length - 1
        with out:
            out.clear_output(wait=True)
            fig = comparison_strip(sample, predictions[picker.value], [min(slider.value, sample.length - 1)])
            display(fig)
            plt.close(fig)

    redraw_on((picker, slider), redraw)
    return widgets.VBox([widgets.HBox([picker, slider]), out])
