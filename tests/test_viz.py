"""Drawing: layers are decoded consistently and composed where they belong."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest

from instseg.data.coco_json import load_coco_gt
from instseg.viz.browser import benchmark_browser
from instseg.viz.draw import compose, image_layers, layer_panels


def test_compose_colours_only_the_chosen_layer() -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    visible = np.zeros((1, 8, 8), bool)
    visible[0, 2:5, 2:5] = True
    layers = {"image": image, "visible": visible, "amodal": visible.copy(), "occluder": np.zeros_like(visible),
              "boundary": np.zeros_like(visible)}
    out = compose(layers, ["visible"])
    assert (out[visible[0]] > 0).any(axis=-1).all()
    assert (out[~visible[0]] == 0).all()
    with pytest.raises(ValueError, match="unknown layers"):
        compose(layers, ["depth"])


def test_image_layers_and_headless_browser(smoke_dir: Path) -> None:
    gt = load_coco_gt(smoke_dir / "annotations" / "val.json")
    image_id = max(gt["images"], key=lambda im: sum(a["image_id"] == im["id"] for a in gt["annotations"]))["id"]
    layers = image_layers(gt, image_id, smoke_dir / "images")
    n = len(layers["visible"])
    assert n >= 2 and layers["amodal"].shape == layers["visible"].shape
    assert not (layers["visible"] & ~layers["amodal"]).any()
    assert not (layers["occluder"] & layers["visible"]).any(), "an occluder region cannot be visible"
    layer_panels(layers, instance=0)
    fig = benchmark_browser(gt, smoke_dir / "images", interactive=False, n_static=2)
    assert len(fig.axes) == 2
    widget = benchmark_browser(gt, smoke_dir / "images", interactive=True)
    assert widget.children[0].max == len(gt["images"]) - 1
