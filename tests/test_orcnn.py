"""ORCNN (Follmann et al.): the occlusion target, the occlusion mask derived from the amodal and
visible predictions, its loss coupling both branches, its own initialisation stream, and that it
no longer follows AmodalMRCNN's trajectory."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.ops import MultiScaleRoIAlign

from instseg.data.dataset import CocoInstanceDataset
from instseg.experiments import frozen_heads as fh
from instseg.models.detectors import build_detector
from instseg.models.mask_branch import RoIMaskBranch
from instseg.models.mask_heads import MASK_HEADS, OcclusionRCNNHead, build_mask_head, occlusion_targets
from instseg.models.mask_heads.orcnn import (
    OCCLUSION_EPS,
    occlusion_logits,
    occlusion_probabilities,
    orcnn_loss,
)

C = 8


def _rois(r: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(r, C, 14, 14, generator=torch.Generator().manual_seed(seed))


def _masks(r: int = 3, seed: int = 1) -> dict[str, torch.Tensor]:
    """Amodal targets that contain their visible part, on the 28x28 grid."""
    g = torch.Generator().manual_seed(seed)
    amodal = torch.zeros(r, 28, 28)
    amodal[:, 4:24, 6:22] = 1
    visible = amodal * (torch.rand(r, 28, 28, generator=g) < 0.6)
    return {"mask": amodal, "visible_mask": visible}


def _spread(head: OcclusionRCNNHead) -> OcclusionRCNNHead:
    """Predictor weights away from the near-constant start, so sigma(a) and sigma(v) differ."""
    torch.manual_seed(3)
    for branch in (head.amodal, head.visible):
        nn.init.normal_(branch.predictor.predictor.weight, std=0.3)
    return head


def test_occlusion_target_is_amodal_and_not_visible_by_hand() -> None:
    amodal = torch.tensor([[[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])
    visible = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]])  # (1, 2): visible, not amodal
    expected = torch.tensor([[[0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])
    assert torch.equal(occlusion_targets(amodal, visible), expected)
    assert torch.equal(occlusion_targets(amodal.bool(), visible.bool()), expected)  # bool cache targets too
    assert occlusion_targets(amodal, visible).dtype == torch.float32
    with pytest.raises(ValueError, match="differ"):
        occlusion_targets(amodal, visible[:, :2])


def test_occlusion_mask_is_relu_of_amodal_minus_visible_probabilities() -> None:
    a = torch.tensor([2.0, 0.0, -1.0, 5.0, -30.0])
    v = torch.tensor([-2.0, 0.0, 1.0, -5.0, -30.0])
    expected = torch.clamp(torch.sigmoid(a) - torch.sigmoid(v), min=0)
    torch.testing.assert_close(occlusion_probabilities(a, v), expected)
    assert occlusion_probabilities(a, v)[2] == 0  # visible above amodal: nothing occluded
    torch.testing.assert_close(torch.sigmoid(occlusion_logits(a, v)), expected.clamp(OCCLUSION_EPS, 1 - OCCLUSION_EPS))


def test_forward_and_loss_shapes() -> None:
    head = OcclusionRCNNHead(C, C).train()
    outputs = head(_rois(3))
    assert set(outputs) == {"mask", "visible_mask", "invisible_mask"}
    assert all(v.shape == (3, 1, 28, 28) for v in outputs.values())
    torch.testing.assert_close(outputs["invisible_mask"], occlusion_logits(outputs["mask"], outputs["visible_mask"]))
    losses = head.loss(outputs, _masks(3))
    assert set(losses) == {"loss_mask", "loss_visible_mask", "loss_invisible_mask"}
    assert all(v.shape == () and torch.isfinite(v) for v in losses.values())
    head.eval()
    with torch.no_grad():
        plain, full = head(_rois(3)), head(_rois(3), return_maps=True)
    assert set(plain) == {"mask"} and set(full) == set(outputs)  # no visible branch at inference unless asked
    torch.testing.assert_close(plain["mask"], full["mask"], rtol=0, atol=0)
    assert set(head.loss(plain, _masks(3))) == {"loss_mask"}
    empty = head.train()(torch.zeros(0, C, 14, 14))
    assert all(v.shape == (0, 1, 28, 28) for v in empty.values())
    total = sum(head.loss(empty, {"mask": torch.zeros(0, 28, 28), "visible_mask": torch.zeros(0, 28, 28)}).values())
    assert total.item() == 0 and total.grad_fn is not None


def test_occlusion_loss_value_and_derived_target() -> None:
    """Zero logits: A = V = 1/2, O = 0, clamped to eps; the loss is the BCE of eps against the
    derived target, and equals the loss against the target given explicitly."""
    zeros = {k: torch.zeros(2, 1, 28, 28) for k in ("mask", "visible_mask")}
    zeros["invisible_mask"] = occlusion_logits(zeros["mask"], zeros["visible_mask"])
    targets = _masks(2)
    occluded = occlusion_targets(targets["mask"], targets["visible_mask"])
    share = occluded.mean().item()
    eps = OCCLUSION_EPS
    expected = share * -math.log(eps) + (1 - share) * -math.log(1 - eps)
    losses = orcnn_loss(zeros, targets)
    torch.testing.assert_close(losses["loss_invisible_mask"], torch.tensor(expected), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(losses["loss_mask"], torch.tensor(math.log(2)))
    explicit = orcnn_loss(zeros, {**targets, "invisible_mask": occluded})
    torch.testing.assert_close(explicit["loss_invisible_mask"], losses["loss_invisible_mask"])
    with pytest.raises(KeyError, match="visible_mask"):
        orcnn_loss(zeros, {"mask": targets["mask"]})
    with pytest.raises(ValueError, match="unknown loss weights"):
        OcclusionRCNNHead(C, C, loss_weights={"occlusion": 1.0})


def test_occlusion_loss_gradcheck_in_both_logits() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 1, 6, 6, generator=g, dtype=torch.double, requires_grad=True)
    v = torch.randn(2, 1, 6, 6, generator=g, dtype=torch.double, requires_grad=True)
    target = (torch.rand(2, 6, 6, generator=g) < 0.5).double()

    def occlusion_term(amodal: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        return orcnn_loss({"invisible_mask": occlusion_logits(amodal, visible)}, {"invisible_mask": target})[
            "loss_invisible_mask"]

    assert torch.autograd.gradcheck(occlusion_term, (a, v), eps=1e-6, atol=1e-6)
    grad_a, grad_v = torch.autograd.grad(occlusion_term(a, v), (a, v))
    active = (torch.sigmoid(a) - torch.sigmoid(v) > OCCLUSION_EPS).detach()
    assert active.any() and (~active).any()
    assert (grad_a[active] != 0).all() and (grad_v[active] != 0).all()
    assert (grad_a[~active] == 0).all() and (grad_v[~active] == 0).all()  # ReLU off: no gradient
    assert (torch.sign(grad_a[active]) == -torch.sign(grad_v[active])).all()  # A - V: opposite pulls


def _grad_sums(head: nn.Module, loss: torch.Tensor, prefix: str) -> float:
    head.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return sum(p.grad.abs().sum().item() for n, p in head.named_parameters() if n.startswith(prefix)
               and p.grad is not None)


def test_occlusion_loss_trains_both_branches_and_couples_them() -> None:
    head = _spread(OcclusionRCNNHead(C, C)).train()
    losses = head.loss(head(_rois(4)), _masks(4))
    occlusion = losses["loss_invisible_mask"]
    assert _grad_sums(head, occlusion, "amodal.") > 0 and _grad_sums(head, occlusion, "visible.") > 0
    for name, p in head.named_parameters():  # every parameter of both branches, first conv included
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # the amodal and visible terms alone stay in their own branch
    assert _grad_sums(head, losses["loss_mask"], "visible.") == 0 < _grad_sums(head, losses["loss_mask"], "amodal.")
    assert _grad_sums(head, losses["loss_visible_mask"], "amodal.") == 0


def test_branches_have_their_own_initialisation_stream() -> None:
    """Under one seed the plain FCN head and ORCNN's amodal branch used to start identical
    (the amodal branch was built first from the same stream); now ORCNN's stream is its own,
    still a pure function of the seed."""
    torch.manual_seed(7)
    fcn = build_mask_head("fcn", C, C)
    torch.manual_seed(7)
    orcnn = build_mask_head("orcnn", C, C)
    torch.manual_seed(7)
    again = build_mask_head("orcnn", C, C)
    assert isinstance(orcnn, OcclusionRCNNHead) and MASK_HEADS["orcnn"] is OcclusionRCNNHead
    first_conv = "tower.0.weight"
    assert not torch.equal(orcnn.amodal.state_dict()[first_conv], fcn.state_dict()[first_conv])
    assert not torch.equal(orcnn.amodal.state_dict()[first_conv], orcnn.visible.state_dict()[first_conv])
    assert all(torch.equal(p, q) for p, q in zip(orcnn.state_dict().values(), again.state_dict().values()))
    torch.manual_seed(8)
    other = build_mask_head("orcnn", C, C)
    assert not torch.equal(other.amodal.state_dict()[first_conv], orcnn.amodal.state_dict()[first_conv])


def _train(head: nn.Module, steps: int = 5) -> nn.Module:
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2)
    x, targets = _rois(6), _masks(6)
    head.train()
    for _ in range(steps):
        loss = sum(head.loss(head(x), targets).values())  # the FCN head's loss reads "mask" alone
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval()


def test_the_occlusion_term_changes_the_amodal_trajectory_even_from_the_same_start() -> None:
    """ORCNN's amodal branch started from the FCN head's very weights still moves elsewhere:
    the occlusion loss trains it too."""
    torch.manual_seed(0)
    fcn = build_mask_head("fcn", C, C)
    orcnn = build_mask_head("orcnn", C, C)
    orcnn.amodal.load_state_dict(fcn.state_dict())
    x = _rois(2, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(orcnn.eval()(x)["mask"], fcn.eval()(x)["mask"])
    _train(orcnn), _train(fcn)
    with torch.no_grad():
        assert not torch.allclose(orcnn(x)["mask"], fcn(x)["mask"])


@pytest.fixture(scope="module")
def amodal_cache(smoke_dir: Path) -> fh.RoiCache:
    torch.manual_seed(0)
    detector = build_detector("frcnn", 10, "fcn", {"conv_channels": 16}, fpn_channels=16, min_size=64, max_size=64)
    train = CocoInstanceDataset(smoke_dir / "annotations" / "train.json", smoke_dir / "images")
    return fh.cache_roi_features(detector, train, range(6), jitter_per_gt=1, seed=0, amodal=True)


def test_orcnn_amodal_logits_differ_from_amodal_mrcnn_under_the_same_seed(amodal_cache: fh.RoiCache) -> None:
    """Table 3.5's two rows, trained by the ablation's own loop under one seed: before, ORCNN's
    evaluated (amodal) output was AmodalMRCNN's to the last bit."""
    mrcnn_variant, orcnn_variant = fh.TABLE_3_5[0], fh.TABLE_3_5[1]
    assert (mrcnn_variant.head, orcnn_variant.head) == ("fcn", "orcnn")
    assert fh.config_key(mrcnn_variant) != fh.config_key(orcnn_variant)
    features = amodal_cache.batch(range(8))[0]
    heads = [fh.train_head(v, amodal_cache, 4, 8, 1e-3, 0, 16) for v in (mrcnn_variant, orcnn_variant)]
    with torch.no_grad():
        mrcnn, orcnn = (head(features)["mask"] for head in heads)
    assert mrcnn.shape == orcnn.shape == (8, 1, 28, 28)
    assert not torch.allclose(mrcnn, orcnn, rtol=1e-3, atol=1e-4)
    assert "invisible_mask" in heads[1].train()(features) and {"mask", "visible_mask"} <= set(amodal_cache.targets)


def test_mask_branch_predicts_orcnn_amodal_masks_end_to_end() -> None:
    """Hosted by a detector's mask branch, ORCNN's amodal mask is the detections' "masks"; its
    visible and occlusion masks have no detection key, so they stay out (asked for or not)."""
    head = OcclusionRCNNHead(C, C).eval()
    pool = MultiScaleRoIAlign(["0"], 14, 2)
    features = {"0": torch.randn(1, C, 16, 16)}
    for return_maps in (True, False):
        branch = RoIMaskBranch(head, pool, occluder_rule="none", return_maps=return_maps)
        detections = [{"boxes": torch.tensor([[2.0, 2, 30, 30], [10, 10, 60, 50]]), "labels": torch.tensor([1, 2])}]
        with torch.no_grad():
            (out,) = branch.predict(features, [(64, 64)], detections)
            amodal = head(pool(features, [detections[0]["boxes"]], [(64, 64)]))["mask"].sigmoid()
        assert set(out) - {"boxes", "labels"} == {"masks"}
        torch.testing.assert_close(out["masks"], amodal)
