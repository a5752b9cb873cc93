"""CPMask figures: parsed ROIs, the affinity map of one pixel, and the affinity browser."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from instseg.models.mask_heads import CPMaskHead  # noqa: E402
from instseg.viz.affinity import affinity_browser, affinity_map, parse_rois, plot_parsed_rois  # noqa: E402


def _parsed(**flags: bool):
    torch.manual_seed(0)
    head = CPMaskHead(8, 8, num_convs=1, **flags).train()
    boxes = torch.tensor([[2.0, 2.0, 20.0, 20.0], [10.0, 4.0, 30.0, 30.0]])
    parsed = parse_rois(head, torch.randn(2, 8, 14, 14), torch.rand(3, 32, 32), boxes, ["a", "b"])
    assert head.training  # parse_rois restores the mode
    return parsed


def test_affinity_map_is_the_pixels_row() -> None:
    a = torch.arange(16.0).reshape(4, 4)  # a 2x2 grid
    np.testing.assert_array_equal(affinity_map(a, 1, 0), [[8.0, 9.0], [10.0, 11.0]])
    with pytest.raises(ValueError, match="outside the 2x2 grid"):
        affinity_map(a, 2, 0)


def test_parsed_rois_and_figures() -> None:
    parsed = _parsed()
    assert parsed.crops.shape == (2, 3, 28, 28) and parsed.mask.shape == (2, 28, 28) and parsed.side == 14
    fig = plot_parsed_rois(parsed, "novel")
    assert len(fig.axes) == 6 and fig.axes[1].get_title() == "mask" and fig.axes[2].get_title() == "boundary"
    plt.close(fig)
    static = affinity_browser(parsed, interactive=False)
    np.testing.assert_allclose(static.axes[1].images[0].get_array(), affinity_map(parsed.affinity[0], 7, 7))
    plt.close(static)
    widget = affinity_browser(parsed, interactive=True)
    assert widget.children[0].options == (("a", 0), ("b", 1))
    with pytest.raises(ValueError, match="2 boxes but 1 titles"):
        parse_rois(CPMaskHead(8, 8, num_convs=1), torch.randn(2, 8, 14, 14), torch.rand(3, 8, 8), torch.zeros(2, 4), ["x"])


def test_head_without_affinity_unit_has_no_browser() -> None:
    parsed = _parsed(affinity=False, affinity_supervision=False, boundary=False)
    assert parsed.boundary is None and parsed.affinity is None
    fig = plot_parsed_rois(parsed)
    assert len(fig.axes) == 4
    plt.close(fig)
    with pytest.raises(ValueError, match="without the affinity unit"):
        affinity_browser(parsed, interactive=False)
