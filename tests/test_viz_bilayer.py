"""Bilayer heatmap figure, prediction composition and the prediction browser."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from instseg.models.mask_heads import build_mask_head  # noqa: E402
from instseg.viz.bilayer import compose_prediction, plot_bilayer_rois, prediction_browser, roi_maps  # noqa: E402


def _pred() -> dict[str, torch.Tensor]:
    masks = torch.zeros(2, 1, 8, 8)
    masks[0, 0, 2:5, 2:5] = 1.0
    masks[1, 0, 6:, 6:] = 1.0
    return {"boxes": torch.tensor([[2.0, 2.0, 4.0, 4.0], [6.0, 6.0, 7.0, 7.0]]), "labels": torch.tensor([1, 2]),
            "scores": torch.tensor([0.9, 0.2]), "masks": masks, "occluder_masks": masks.flip(0),
            "occludee_contours": torch.zeros(2, 1, 8, 8), "occluder_contours": torch.zeros(2, 1, 8, 8)}


def test_plot_bilayer_rois_squares_the_maps() -> None:
    maps = {"mask": torch.rand(2, 28, 28), "occluder_mask": torch.rand(2, 1, 28, 28)}
    fig = plot_bilayer_rois(torch.rand(3, 32, 32), torch.tensor([[1.0, 1, 10, 10], [5, 5, 20, 20]]), maps)
    axes = np.array(fig.axes).reshape(2, 3)
    assert [ax.get_title() for ax in axes[0, 1:]] == ["GCN-1 occluder mask", "GCN-2 occludee mask"]
    np.testing.assert_allclose(axes[1, 2].images[0].get_array(), maps["mask"][1].numpy() ** 2, rtol=1e-6)
    plt.close(fig)
    one = plot_bilayer_rois(torch.rand(3, 32, 32), torch.tensor([[1.0, 1, 10, 10]]), {"boundary": torch.rand(1, 28, 28)})
    assert len(one.axes) == 2
    plt.close(one)
    with pytest.raises(ValueError, match="2 boxes but 1"):
        plot_bilayer_rois(torch.rand(3, 8, 8), torch.zeros(2, 4), {"mask": torch.rand(1, 28, 28)})
    with pytest.raises(ValueError, match="no known map"):
        plot_bilayer_rois(torch.rand(3, 8, 8), torch.zeros(1, 4), {"other": torch.rand(1, 28, 28)})


def test_roi_maps_gives_probabilities_and_restores_the_mode() -> None:
    head = build_mask_head("bcnet", in_channels=8, conv_channels=8).train()
    maps = roi_maps(head, torch.randn(3, 8, 14, 14))
    assert set(maps) == {"mask", "boundary", "occluder_mask", "occluder_boundary"}
    assert all(m.shape == (3, 28, 28) and 0 <= m.min() and m.max() <= 1 for m in maps.values())
    assert head.training


def test_compose_prediction_known_answer() -> None:
    image = torch.zeros(3, 8, 8)
    out = compose_prediction(image, _pred(), ["masks"], score_threshold=0.5)
    assert (out[2:5, 2:5] > 0).any(axis=-1).all()  # the confident mask is tinted
    assert (out[6:, 6:] == 0).all()  # below the score threshold: untouched
    assert (out[0, 0] == 0).all()
    alone = compose_prediction(image, _pred(), ["masks"], score_threshold=0.5, instance=1)
    assert (alone[6:, 6:] > 0).any(axis=-1).all() and (alone[2:5, 2:5] == 0).all()
    occ = compose_prediction(image, _pred(), ["occluder_masks"], score_threshold=0.5)
    np.testing.assert_allclose(occ[6, 6], [0.7, 0.07, 0.07], rtol=1e-5)  # detection 0's occluder map
    boxes = compose_prediction(image, _pred(), ["boxes"], score_threshold=0.5)
    assert (boxes[2, 2:5] > 0).any(axis=-1).all() and (boxes[3, 3] == 0).all()


def test_prediction_browser_static_and_interactive() -> None:
    images, preds = [torch.rand(3, 8, 8)] * 2, [_pred(), _pred()]
    fig = prediction_browser(images, preds, interactive=False, n_static=2)
    assert len(fig.axes) == 2 * 5  # masks, occluder masks, two contours, boxes
    plt.close(fig)
    import ipywidgets

    assert isinstance(prediction_browser(images, preds, interactive=True), ipywidgets.Widget)
    plt.close("all")
    with pytest.raises(ValueError, match="2 images but 1"):
        prediction_browser(images, preds[:1])
