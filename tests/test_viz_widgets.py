"""The shared widget plumbing: choices reset only on change, redraws fire on every control
(``show_picture`` runs in the browsers' interactive tests)."""

from __future__ import annotations

import ipywidgets

from instseg.viz.widgets import picked, redraw_on, set_choices


def test_set_choices_resets_to_all_only_when_the_choices_change() -> None:
    picker = ipywidgets.Dropdown(options=[("all", -1)], value=-1)
    changes = []
    picker.observe(lambda change: changes.append(change["new"]), names="value")
    set_choices(picker, [("a", 0), ("b", 1)])
    picker.value = 1
    assert picked(picker) == 1
    set_choices(picker, [("a", 0), ("b", 1)])  # same choices: the pick survives
    assert picker.value == 1
    set_choices(picker, [("c", 0)])
    assert picker.value == -1 and picked(picker) is None
    assert picker.options == (("all", -1), ("c", 0))
    assert changes == [1, -1]


def test_redraw_on_fires_now_and_on_every_control() -> None:
    calls = []
    a, b = ipywidgets.IntSlider(value=0), ipywidgets.Checkbox(value=False)
    redraw_on((a, b), lambda *_: calls.append((a.value, b.value)))
    a.value = 3
    b.value = True
    assert calls == [(0, False), (3, False), (3, True)]

