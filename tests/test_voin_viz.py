"""The before / after / ground-truth views: panels in the stated order with the hole outlined only on
the input, a strip of frames x columns, and a browser whose controls redraw (a static strip headless)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from instseg.video.voin.data.samples import VoiSample
from instseg.video.voin.viz import OUTLINE, comparison_strip, inpainting_browser, panels


def _sample(length: int = 4) -> VoiSample:
    clean = np.full((length, 24, 24, 3), 80, np.uint8)
    amodal = np.zeros((length, 24, 24), bool)
    amodal[:, 4:20, 4:20] = True
    occluded = np.zeros_like(amodal)
    occluded[:, 8:14, 8:14] = True
    corrupted = clean.copy()
    corrupted[occluded] = 200
    return VoiSample(corrupted, clean, amodal, occluded, occluded, amodal & ~occluded,
                     {"kind": "synthetic", "video_id": 5, "track_id": 1, "start": 0, "length": length})


def test_panels_order_and_the_outline_marks_the_hole_edge_only():
    s = _sample()
    got = panels(s, {"A": s.clean, "B": s.corrupted}, 1)
    assert [n for n, _ in got] == ["input", "A", "B", "ground truth"]
    outlined = got[0][1]
    assert (outlined[8, 8] == OUTLINE).all() and not (outlined[11, 11] == OUTLINE).all()
    assert (got[1][1] == s.clean[1]).all() and (got[-1][1] == s.clean[1]).all()


def test_strip_is_frames_by_columns_and_headless_browser_is_a_strip():
    s = _sample()
    fig = comparison_strip(s, {"A": s.clean}, [0, 3])
    assert len(fig.axes) == 2 * 3
    plt.close(fig)
    static = inpainting_browser([s], [{"A": s.clean}], interactive=False, n_static=2)
    assert len(static.axes) == 2 * 3
    plt.close(static)


def test_interactive_browser_has_a_sample_picker_and_a_frame_slider():
    s, t = _sample(4), _sample(6)
    view = inpainting_browser([s, t], [{"A": s.clean}, {"A": t.clean}], interactive=True)
    picker, slider = view.children[0].children
    assert [label for label, _ in picker.options] == ["video 5 track 1 start 0"] * 2
    picker.value = 1
    assert slider.max == 5
    plt.close("all")
