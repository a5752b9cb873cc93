"""CPMask head: z-scoring, the affinity loss on hand-computed cases and its gradients, switches."""

from __future__ import annotations

import pytest
import torch

from instseg.models.mask_heads import (
    CPMaskHead,
    FCNMaskHead,
    affinity_loss,
    build_mask_head,
    count_parameters,
    cpmask_loss,
    mask_head_targets,
)
from instseg.models.mask_heads.cpmask import AffinityParsingUnit, zscore


def test_zscore_matches_numpy() -> None:
    x = torch.randn(3, 8, 5, dtype=torch.float64)
    z = zscore(x, dim=1, eps=0.0)
    expected = (x.numpy() - x.numpy().mean(1, keepdims=True)) / x.numpy().std(1, keepdims=True)
    assert torch.allclose(z, torch.from_numpy(expected))


def test_affinity_loss_one_foreground_pixel() -> None:
    # 2x2 grid, foreground = pixel 0; its row puts 0.5 on foreground and 0.5 on background:
    # |1 - 0.5| + |0.5| = 1. Rows of background pixels do not count.
    a = torch.tensor([[[0.5, 0.25, 0.125, 0.125], [0.0, 1.0, 0.0, 0.0],
                       [0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]]])
    mask = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert affinity_loss(a, mask).item() == pytest.approx(1.0)


def test_affinity_loss_two_foreground_pixels_and_pooled_mask() -> None:
    # foreground = pixels 0, 1. Row 0: 0.75 on fg -> 0.25 + 0.25; row 1: 0.7 on fg -> 0.3 + 0.3.
    # The 4x4 mask pools to [[1, 1], [0, 0]] (the bottom-left block is 1/4 foreground: < 0.5).
    a = torch.tensor([[[0.5, 0.25, 0.125, 0.125], [0.1, 0.6, 0.2, 0.1],
                       [0.25, 0.25, 0.25, 0.25], [0.25, 0.25, 0.25, 0.25]]])
    mask = torch.zeros(1, 4, 4)
    mask[0, :2, :] = 1
    mask[0, 3, 0] = 1
    assert affinity_loss(a, mask).item() == pytest.approx((0.5 + 0.6) / 2)


def test_affinity_loss_is_zero_for_a_perfect_affinity_and_without_foreground() -> None:
    fg = torch.tensor([1.0, 1.0, 0.0, 0.0])
    perfect = (fg / fg.sum()).expand(4, 4)[None]
    assert affinity_loss(perfect, torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])).item() == pytest.approx(0.0)
    a = torch.full((2, 4, 4), 0.25, requires_grad=True)
    empty = affinity_loss(a, torch.zeros(2, 2, 2))
    assert empty.item() == 0.0 and empty.requires_grad


def test_affinity_loss_rejects_a_non_square_grid() -> None:
    with pytest.raises(ValueError, match="square"):
        affinity_loss(torch.full((1, 6, 6), 1 / 6), torch.ones(1, 2, 3))


def test_affinity_loss_gradcheck() -> None:
    logits = torch.randn(2, 9, 9, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(2, 3, 3, dtype=torch.float64)
    mask[0, :2, :2] = 1
    mask[1, 1:, :] = 1
    assert torch.autograd.gradcheck(lambda x: affinity_loss(torch.softmax(x, -1), mask), (logits,))


def test_affinity_loss_gradient_reaches_the_embeddings_and_the_tower() -> None:
    torch.manual_seed(0)
    head = CPMaskHead(8, 8, num_convs=2).train()
    x = torch.randn(4, 8, 14, 14)
    mask = torch.zeros(4, 28, 28)
    mask[:, 6:20, 4:18] = 1
    loss = cpmask_loss(head(x), {"mask": mask, "boundary": mask})["loss_affinity"]
    assert loss.item() > 0
    loss.backward()
    for name in ("affinity.theta.weight", "affinity.phi.weight", "tower.0.weight", "boundary.tower.0.weight"):
        grad = dict(head.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    # g only coordinates features: the affinity loss does not reach it
    assert head.affinity.g.weight.grad is None or head.affinity.g.weight.grad.abs().sum() == 0


def test_affinity_supervision_trains_the_affinity() -> None:
    """Foreground pixels share one appearance, background another (+ noise): training on the
    affinity loss alone must pull each foreground row's mass onto the foreground."""
    torch.manual_seed(0)
    mask = torch.zeros(16, 14, 14)
    mask[:, 3:11, 2:9] = 1
    fg_look, bg_look = torch.randn(8, 1, 1), torch.randn(8, 1, 1)
    x = mask[:, None] * fg_look + (1 - mask[:, None]) * bg_look + 0.5 * torch.randn(16, 8, 14, 14)
    unit = AffinityParsingUnit(8)
    opt = torch.optim.Adam(unit.parameters(), lr=0.05)
    losses = []
    for _ in range(40):
        loss = affinity_loss(unit.affinity(x), mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_affinity_rows_sum_to_one_and_ignore_embedding_scale() -> None:
    torch.manual_seed(0)
    unit = AffinityParsingUnit(6, embed_channels=4)
    c = torch.randn(2, 6, 5, 5)
    a = unit.affinity(c)
    assert a.shape == (2, 25, 25)
    assert torch.allclose(a.sum(-1), torch.ones(2, 25))
    with torch.no_grad():  # z-scoring makes the affinity blind to a per-pixel rescaling of embeddings
        unit.theta.weight.mul_(3.0)
    assert torch.allclose(unit.affinity(c), a, atol=1e-3)  # up to eps


def test_switches_select_modules_and_outputs() -> None:
    x = torch.randn(3, 16, 14, 14)
    full = CPMaskHead(16, 16).train()
    assert set(full(x)) == {"mask", "boundary", "affinity"}
    assert set(full.eval()(x)) == {"mask", "boundary"}  # no affinity matrix at inference
    parsed = full.parse(x)
    assert parsed["affinity"].shape == (3, 196, 196) and parsed["C_coordinated"].shape == (3, 16, 14, 14)
    unsupervised = CPMaskHead(16, 16, affinity_supervision=False).train()
    assert set(unsupervised(x)) == {"mask", "boundary"} and "affinity" in unsupervised.parse(x)
    plain = CPMaskHead(16, 16, boundary=False, affinity=False, affinity_supervision=False).train()
    assert set(plain(x)) == {"mask"}
    # all switches off is the class-agnostic Mask R-CNN head, parameter for parameter
    assert count_parameters(plain) == count_parameters(FCNMaskHead(16, 16))
    assert count_parameters(full) > count_parameters(CPMaskHead(16, 16, boundary=False))
    with pytest.raises(ValueError, match="affinity_supervision"):
        CPMaskHead(16, 16, affinity=False)
    with pytest.raises(ValueError, match="unknown loss weights"):
        CPMaskHead(16, 16, loss_weights={"occluder_mask": 1.0})
    assert isinstance(build_mask_head("cpmask", in_channels=16, conv_channels=16), CPMaskHead)


def test_loss_terms_weights_and_empty_batch() -> None:
    torch.manual_seed(0)
    head = CPMaskHead(8, 8, num_convs=1).train()
    rois = torch.randn(2, 8, 14, 14)
    gt_masks = torch.zeros(1, 40, 40, dtype=torch.bool)
    gt_masks[0, 10:30, 10:30] = True
    boxes = torch.tensor([[10.0, 10.0, 30.0, 30.0]])
    targets = mask_head_targets(gt_masks.repeat(2, 1, 1), boxes.repeat(2, 1), boxes.repeat(2, 1),
                                torch.tensor([0, 1]), occluder="none")
    outputs = head(rois)
    losses = cpmask_loss(outputs, targets)
    assert set(losses) == {"loss_mask", "loss_boundary", "loss_affinity"}
    halved = cpmask_loss(outputs, targets, {"mask": 1.0, "boundary": 0.25, "affinity": 0.25})
    assert halved["loss_boundary"].item() == pytest.approx(losses["loss_boundary"].item() / 2)
    assert halved["loss_affinity"].item() == pytest.approx(losses["loss_affinity"].item() / 2)
    empty = head.loss(head(torch.zeros(0, 8, 14, 14)), {k: v[:0] for k, v in targets.items()})
    assert all(v.item() == 0 and v.requires_grad for v in empty.values())
    sum(empty.values()).backward()  # zero losses still backpropagate (DDP needs every parameter used)
