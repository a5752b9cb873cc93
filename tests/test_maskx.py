"""The MaskX-style weight-transfer head: detection weights as class embeddings, the transfer
function's reach to classes it never trained on, gradients, and its run on the frozen detector."""

from __future__ import annotations


import pytest
import torch
from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

from instseg.engine import InfiniteBatchSampler, derive_seed
from instseg.experiments import frozen_heads as fh
from instseg.experiments import partial_supervision as ps
from instseg.models.detectors import with_head
from instseg.models.mask_heads import MASK_HEADS
from instseg.models.mask_heads.maskx import WeightTransferMaskHead, box_predictor_embeddings


def test_embeddings_are_each_labels_classification_then_box_rows() -> None:
    torch.manual_seed(0)
    predictor = FastRCNNPredictor(6, num_classes=3)
    emb = box_predictor_embeddings(predictor)
    assert emb.shape == (3, 6 + 4 * 6)
    for k in range(3):
        expected = torch.cat([predictor.cls_score.weight[k], *predictor.bbox_pred.weight[4 * k:4 * k + 4]])
        assert torch.equal(emb[k], expected)
    assert not emb.requires_grad
    emb += 1  # a copy: the detector's weights stay as they are
    assert not torch.equal(emb[0, :6], predictor.cls_score.weight[0])


def test_embeddings_need_a_class_specific_box_predictor() -> None:
    with pytest.raises(ValueError, match="Faster R-CNN box predictor"):
        box_predictor_embeddings(nn.Linear(4, 4))
    agnostic = FastRCNNPredictor(6, num_classes=3)
    agnostic.bbox_pred = nn.Linear(6, 4)
    with pytest.raises(ValueError, match="4 rows per class"):
        box_predictor_embeddings(agnostic)


def _head(embeddings: torch.Tensor, channels: int = 8) -> WeightTransferMaskHead:
    torch.manual_seed(0)
    head = WeightTransferMaskHead(4, embeddings, conv_channels=channels, num_convs=2)
    nn.init.normal_(head.transfer[2].weight, std=0.1)  # away from the near-constant start
    return head


def test_mask_logits_are_the_transferred_1x1_predictor_on_the_upsampled_features() -> None:
    emb = torch.randn(3, 5)
    head = _head(emb).eval()
    x, labels = torch.randn(4, 4, 14, 14), torch.tensor([1, 2, 2, 0])
    logits = head(x, labels)["mask"]
    assert logits.shape == (4, 1, 28, 28)
    features = torch.relu(head.deconv(head.tower(x)))
    for r, label in enumerate(labels.tolist()):
        predicted = head.transfer(emb[label])
        expected = (features[r] * predicted[:-1, None, None]).sum(0) + predicted[-1]
        torch.testing.assert_close(logits[r, 0], expected, rtol=1e-5, atol=1e-5)


def test_a_class_mask_predictor_depends_on_its_embedding_alone() -> None:
    emb = torch.randn(4, 5)
    head = _head(emb).eval()
    x = torch.randn(1, 4, 14, 14).expand(3, -1, -1, -1)
    out = head(x, torch.tensor([1, 2, 3]))["mask"]
    assert not torch.allclose(out[0], out[1])  # same features, other class, other mask
    same = emb.clone()
    same[3] = same[1]
    twin = _head(same).eval()
    twin.load_state_dict({**head.state_dict(), "class_embeddings": same})
    out_twin = twin(x, torch.tensor([1, 2, 3]))["mask"]
    torch.testing.assert_close(out_twin[2], out_twin[0])  # equal embeddings, equal predictors
    torch.testing.assert_close(out_twin[:2], out[:2])


def test_labels_are_required_and_checked() -> None:
    head = _head(torch.randn(3, 5))
    with pytest.raises(ValueError, match="needs the ROIs' labels"):
        head(torch.randn(2, 4, 14, 14))
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.2"):
        head(torch.randn(1, 4, 14, 14), torch.tensor([3]))
    with pytest.raises(ValueError, match=r"\[K, E\]"):
        WeightTransferMaskHead(4, torch.randn(5))


def test_gradient_reaches_the_transfer_function_and_tower_but_not_the_embeddings() -> None:
    emb = torch.randn(3, 5)
    head = _head(emb).train()
    assert "class_embeddings" in dict(head.named_buffers())
    assert all(p is not head.class_embeddings for p in head.parameters())
    masks = torch.zeros(2, 28, 28)
    masks[:, 5:20, 8:22] = 1
    loss = sum(head.loss(head(torch.randn(2, 4, 14, 14), torch.tensor([1, 2])), {"mask": masks}).values())
    loss.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert torch.equal(head.class_embeddings, emb)


def test_per_roi_predictor_gradcheck() -> None:
    emb = torch.randn(3, 5, dtype=torch.double)
    head = _head(emb.float()).double().eval()
    x = torch.randn(2, 4, 14, 14, dtype=torch.double, requires_grad=True)
    labels = torch.tensor([2, 1])
    assert torch.autograd.gradcheck(lambda t: head(t, labels)["mask"], (x,), eps=1e-6, atol=1e-5)


def test_training_on_base_classes_moves_the_predictor_of_an_unseen_class() -> None:
    """The novel class (label 3) never trains, yet its mask changes, towards the shared target:
    its weights come from the transfer function that the base classes trained."""
    torch.manual_seed(1)
    emb = torch.randn(4, 6)
    emb[3] = 0.5 * (emb[1] + emb[2])  # a novel class between the two base ones
    head = _head(emb)
    masks = torch.zeros(8, 28, 28)
    masks[:, 7:21, 7:21] = 1
    x = torch.randn(8, 4, 14, 14)
    base_labels = torch.tensor([1, 2] * 4)

    def novel_loss() -> float:
        with torch.no_grad():
            return head.loss(head(x, torch.full((8,), 3)), {"mask": masks})["loss_mask"].item()

    before = novel_loss()
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(60):
        loss = head.loss(head(x, base_labels), {"mask": masks})["loss_mask"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert novel_loss() < 0.8 * before


def test_class_embeddings_are_build_inputs_not_hyperparameters() -> None:
    """The config key is the head's name and plain hyperparameters: the embeddings come from the
    run's detector when the head is built, so they neither enter nor split the key."""
    torch.manual_seed(0)
    detectors = [nn.Module(), nn.Module()]
    for detector in detectors:
        detector.roi_heads = nn.Module()
        detector.roi_heads.box_predictor = FastRCNNPredictor(6, num_classes=3)
    plain = fh.HeadVariant("x", "maskx", {"hidden": 8}, "none")
    a, b = (plain.for_detector(d) for d in detectors)
    assert not torch.equal(a.inputs["class_embeddings"], b.inputs["class_embeddings"])
    assert fh.config_key(a) == fh.config_key(b) == fh.config_key(plain) == (
        "maskx", (("hidden", "8"), ("num_convs", "4")), "none", False, None)
    assert a == b and "class_embeddings" not in repr(a)
    with pytest.raises(ValueError, match="derived from the frozen detector"):
        fh.HeadVariant("y", "maskx", {"class_embeddings": torch.zeros(3, 30)}, "none")
    head = fh.build_head(plain, 4, 8, detector=detectors[1])
    assert torch.equal(head.class_embeddings, b.inputs["class_embeddings"])
    assert torch.equal(fh.build_head(a, 4, 8).class_embeddings, a.inputs["class_embeddings"])
    with pytest.raises(ValueError, match="pass detector="):
        fh.build_head(plain, 4, 8)


def test_weight_transfer_rows_on_the_frozen_detector(smoke_frozen: dict) -> None:
    """Trained on base ROIs with their labels, scored on the novel categories' detections, and
    usable end to end through ``with_head`` (the detections' labels pick the predictor)."""
    detector = smoke_frozen["detector"]
    emb = box_predictor_embeddings(detector.roi_heads.box_predictor)
    assert emb.shape == (11, 5 * 1024)  # 10 categories and the background; torchvision's box head is 1024 wide
    dirs = ps.directions(smoke_frozen["train"].categories, ("A", "B"))
    variants = [v for v in ps.partial_variants(dirs, detector=detector) if v.head == "maskx"]
    assert [v.name for v in variants] == ["maskx_A", "maskx_B"]
    assert all(torch.equal(v.inputs["class_embeddings"], emb) and not v.head_kwargs for v in variants)
    given = [v for v in ps.partial_variants(dirs, class_embeddings=emb) if v.head == "maskx"]
    assert given == variants and torch.equal(given[0].inputs["class_embeddings"], emb)
    assert [v.name for v in ps.partial_variants(dirs)] == ["fcn_A", "cpmask_A", "fcn_B", "cpmask_B", "fcn_oracle",
                                                          "cpmask_oracle"]
    cfg = fh.AblationConfig(iters=3, batch_rois=8, channels=16, jitter_per_gt=1, bins=None)
    eval_sets = ps.novel_eval_sets(smoke_frozen["val_gt"], smoke_frozen["val"], dirs)
    run = fh.run_ablation(variants, [0], detector, smoke_frozen["train"], eval_sets, cfg)
    assert list(run.runs["variant"]) == ["maskx_A", "maskx_B"] and run.runs["novel_B_AP"].notna().all()
    cache = run.caches[("none", False)]
    label_of = smoke_frozen["train"].label_to_category_id
    assert all(label_of[label] == category for label, category in zip(cache.labels.tolist(),
                                                                      cache.category_ids.tolist()))
    gt_boxes = fh.gt_detections(smoke_frozen["val"])
    records = fh.predict_masks(detector, run.heads[("maskx_A", 0)], smoke_frozen["val"], gt_boxes)
    assert len(records) == sum(len(d["boxes"]) for d in gt_boxes) > 0
    model = with_head(detector, run.heads[("maskx_A", 0)])
    assert model.roi_heads.mask_branch.class_specific
    images = [smoke_frozen["val"][i][0] for i in range(2)]
    with torch.no_grad():
        predictions = model(images)
    assert all(p["masks"].shape[0] == len(p["boxes"]) for p in predictions)


def test_labels_follow_the_rois_into_the_head_in_training(smoke_frozen: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``train_head`` feeds a class-specific head: each ROI's own label, as the cache holds it."""
    cache = fh.cache_roi_features(smoke_frozen["detector"], smoke_frozen["train"], range(4), 1, 0, "none")
    seen: list[torch.Tensor] = []

    class Recording(WeightTransferMaskHead):
        def forward(self, roi_features, labels=None):  # noqa: ANN001, ANN201 - the head interface
            seen.append(labels.clone())
            return super().forward(roi_features, labels)

    emb = box_predictor_embeddings(smoke_frozen["detector"].roi_heads.box_predictor)
    monkeypatch.setitem(MASK_HEADS, "maskx", Recording)
    fh.train_head(fh.HeadVariant("x", "maskx", occluder_rule="none").for_detector(smoke_frozen["detector"]), cache,
                  4, 8, 1e-3, 0, 16)
    assert torch.equal(emb, box_predictor_embeddings(smoke_frozen["detector"].roi_heads.box_predictor))
    assert len(seen) == 4
    sampler_rois = [InfiniteBatchSampler(len(cache), 8, derive_seed(0, 1)).global_batch(i) for i in range(4)]
    for labels, rois in zip(seen, sampler_rois):
        assert torch.equal(labels, cache.labels[torch.as_tensor(rois)])
