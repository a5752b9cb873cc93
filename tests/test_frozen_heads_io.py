"""Head files: a saved head rebuilds with its variant, weights and record, and a MaskX head (whose
class embeddings come from a detector) loads without that detector, from its saved buffer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

from instseg.experiments import frozen_heads as fh


def _box_detector(seed: int) -> nn.Module:
    """The part of a Faster R-CNN that MaskX reads: a box predictor of 3 labels on 6 features."""
    torch.manual_seed(seed)
    detector = nn.Module()
    detector.roi_heads = nn.Module()
    detector.roi_heads.box_predictor = FastRCNNPredictor(6, num_classes=3)
    return detector


def _same_head(a: nn.Module, b: nn.Module) -> None:
    assert type(a) is type(b) and not b.training
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    rois, labels = torch.randn(3, 8, 14, 14), torch.tensor([0, 1, 2])
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(rois, labels)["mask"], b(rois, labels)["mask"], rtol=0, atol=0)


def test_a_saved_head_loads_with_its_variant_and_record(tmp_path: Path) -> None:
    variant = fh.TABLE_3_1[1]
    torch.manual_seed(0)
    head = fh.build_head(variant, 8, 8)
    path = fh.save_head(head, variant, 8, 3, tmp_path / "h.pt")
    loaded, again, record = fh.load_head(path)
    _same_head(head, loaded)
    # the file keeps what rebuilds the head, not the table's label
    assert again == fh.HeadVariant(variant.name, variant.head, variant.head_kwargs, variant.occluder_rule,
                                   variant.amodal)
    assert fh.config_key(again) == fh.config_key(variant)
    assert record["seed"] == 3 and record["channels"] == 8 and record["in_channels"] == 8
    assert record["format"] == fh.HEAD_FORMAT and "state_dict" not in record


def test_a_maskx_head_loads_without_its_detector(tmp_path: Path) -> None:
    trained_on = _box_detector(0)
    variant = fh.HeadVariant("maskx_A", "maskx", {"hidden": 8}, "none").for_detector(trained_on)
    torch.manual_seed(0)
    head = fh.build_head(variant, 8, 8)
    path = fh.save_head(head, variant, 8, 0, tmp_path / "maskx.pt")
    alone, alone_variant, _ = fh.load_head(path)
    _same_head(head, alone)
    assert torch.equal(alone_variant.inputs["class_embeddings"], variant.inputs["class_embeddings"])
    with_detector, _, _ = fh.load_head(path, trained_on)
    _same_head(head, with_detector)
    # the saved buffer is what the head trained with: it wins over another detector's box weights
    other, _, _ = fh.load_head(path, _box_detector(1))
    assert torch.equal(other.class_embeddings, head.class_embeddings)
    blob = torch.load(path, weights_only=True)
    del blob["state_dict"]["class_embeddings"]
    torch.save(blob, tmp_path / "stripped.pt")
    with pytest.raises(ValueError, match="pass detector="):
        fh.load_head(tmp_path / "stripped.pt")
