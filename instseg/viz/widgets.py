"""The ipywidgets plumbing the browsers share: a picker of one item or "all", a redraw of one
picture into an output area, and wiring controls to a redraw."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np


def set_choices(picker: Any, choices: Sequence[tuple[str, int]]) -> None:
    """Offer "all" plus ``choices`` (label, index) and select "all", but only when they changed:
    setting them fires the picker's own redraw."""
    options = (("all", -1), *choices)
    if picker.options != options:
        picker.options, picker.value = options, -1


def picked(picker: Any) -> int | None:
    """The picked index, or None for "all"."""
    return None if picker.value < 0 else picker.value


def show_picture(out: Any, picture: np.ndarray, title: str) -> None:
    """Replace ``out``'s content with one picture."""
    with out:
        out.clear_output(wait=True)
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.imshow(picture)
        ax.set_title(title)
        ax.axis("off")
        plt.show()


def redraw_on(controls: Iterable[Any], redraw: Callable[..., None]) -> None:
    """Call ``redraw`` whenever a control's value changes, and once now."""
    for control in controls:
        control.observe(redraw, names="value")
    redraw()
