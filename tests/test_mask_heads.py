"""Mask heads: shapes for every switch, parameter counts, loss values, gradient routing, R = 0, the
one registry (detector-derived inputs at build time), and extra maps only when asked."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from instseg.layers import NonLocalBlock
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

from instseg.models.mask_heads import (
    MASK_HEADS,
    REFERENCE_LOSS_WEIGHTS,
    BilayerMaskHead,
    FCNMaskHead,
    OcclusionRCNNHead,
    WeightTransferMaskHead,
    bilayer_mask_loss,
    box_predictor_embeddings,
    build_mask_head,
    count_parameters,
    detector_input_names,
    head_hyperparameters,
    mask_head_loss,
    mask_probabilities,
    output_probabilities,
    run_head,
)

C = 8
FLAGS = ("occluder_mask", "occluder_contour", "guidance", "occludee_contour")
OUTPUT_OF_FLAG = {"occluder_mask": "occluder_mask", "occluder_contour": "occluder_boundary",
                  "occludee_contour": "boundary"}


def _rois(r: int = 3, c: int = C, seed: int = 0) -> torch.Tensor:
    return torch.randn(r, c, 14, 14, generator=torch.Generator().manual_seed(seed))


def _targets(outputs: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randint(0, 2, v[:, 0].shape, generator=g).float() for k, v in outputs.items()}


class _ToyDetector(nn.Module):
    """What a head reads from a frozen Faster R-CNN: ``roi_heads.box_predictor`` (3 labels)."""

    def __init__(self) -> None:
        super().__init__()
        self.roi_heads = nn.Module()
        self.roi_heads.box_predictor = FastRCNNPredictor(6, num_classes=3)


def _build(name: str, **kwargs) -> nn.Module:  # noqa: ANN003 - head hyperparameters
    """Every registered head, the detector-derived ones from a toy detector."""
    detector = _ToyDetector() if detector_input_names(name) else None
    return build_mask_head(name, in_channels=C, conv_channels=C, detector=detector, **kwargs)


def _labels(r: int) -> torch.Tensor:
    return torch.arange(r) % 3


@pytest.mark.parametrize("block", ["gcn", "fcn"])
@pytest.mark.parametrize("switches", list(itertools.product([True, False], repeat=4)))
def test_bilayer_outputs_for_every_switch(block: str, switches: tuple[bool, ...]) -> None:
    flags = dict(zip(FLAGS, switches))
    head = BilayerMaskHead(C, C, block=block, **flags)
    outputs = head(_rois())
    expected = {"mask"} | {out for flag, out in OUTPUT_OF_FLAG.items() if flags[flag]}
    assert set(outputs) == expected
    assert all(v.shape == (3, 1, 28, 28) for v in outputs.values())
    losses = head.loss(outputs, _targets(outputs))
    assert set(losses) == {f"loss_{k}" for k in expected}
    n_nonlocal = sum(isinstance(m, NonLocalBlock) for m in head.modules())
    has_occluder = flags["guidance"] or flags["occluder_mask"] or flags["occluder_contour"]
    assert n_nonlocal == (0 if block == "fcn" else 1 + has_occluder)


def test_one_registry_holds_every_head(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sorted(MASK_HEADS) == ["bcnet", "bilayer_fcn", "cpmask", "fcn", "gcn", "maskx", "orcnn"]
    from instseg.experiments import frozen_heads as fh

    class Marked(FCNMaskHead):
        pass

    monkeypatch.setitem(MASK_HEADS, "fcn", Marked)
    assert isinstance(fh.build_head(fh.TABLE_3_3[0], 8, 8), Marked)  # the ablations build from it: no second registry


@pytest.mark.parametrize("name", sorted(MASK_HEADS))
def test_registry_builds_every_head(name: str) -> None:
    head = _build(name)
    outputs = head(_rois(2), _labels(2))
    assert outputs["mask"].shape == (2, 1, 28, 28)
    assert set(head.loss(outputs, _targets(outputs))) == {f"loss_{k}" for k in outputs}


def test_registry_rejects_unknown_name_and_passes_kwargs() -> None:
    with pytest.raises(ValueError, match="bcnet"):
        build_mask_head("mask2former", in_channels=C)
    head = build_mask_head("bcnet", in_channels=C, conv_channels=C, occluder_contour=False)
    assert set(head.train()(_rois(1))) == {"mask", "boundary", "occluder_mask"}


def test_detector_derived_inputs_come_from_the_detector_at_build_time() -> None:
    detector = _ToyDetector()
    head = build_mask_head("maskx", in_channels=C, conv_channels=C, detector=detector)
    assert isinstance(head, WeightTransferMaskHead)
    assert torch.equal(head.class_embeddings, box_predictor_embeddings(detector.roi_heads.box_predictor))
    torch.manual_seed(0)
    same = WeightTransferMaskHead.from_detector(detector, C, conv_channels=C)
    assert torch.equal(same.class_embeddings, head.class_embeddings)
    with pytest.raises(ValueError, match="pass detector="):
        build_mask_head("maskx", in_channels=C, conv_channels=C)
    with pytest.raises(ValueError, match="both"):
        build_mask_head("maskx", in_channels=C, detector=detector, class_embeddings=head.class_embeddings)
    with pytest.raises(ValueError, match="FCOS"):
        build_mask_head("maskx", in_channels=C, detector=nn.Linear(2, 2))
    assert detector_input_names("fcn") == () and detector_input_names("maskx") == ("class_embeddings",)
    # heads that read nothing from the detector ignore it
    assert isinstance(build_mask_head("fcn", in_channels=C, conv_channels=C, detector=detector), FCNMaskHead)


def test_hyperparameters_are_plain_with_defaults_and_without_detector_inputs() -> None:
    assert head_hyperparameters("maskx") == {"conv_channels": 256, "num_convs": 4, "hidden": None}
    bcnet = head_hyperparameters("bcnet", {"guidance": False})
    assert bcnet["block"] == "gcn" and bcnet["guidance"] is False and bcnet["occluder_mask"] is True
    assert head_hyperparameters("gcn")["nonlocal_after"] == 2
    with pytest.raises(ValueError, match="derived from the frozen detector"):
        head_hyperparameters("maskx", {"class_embeddings": torch.zeros(3, 4)})
    with pytest.raises(ValueError, match="not a plain value"):
        head_hyperparameters("fcn", {"num_classes": torch.tensor(3)})
    with pytest.raises(TypeError):
        head_hyperparameters("fcn", {"no_such_switch": 1})


def test_fcn_head_channels_and_class_selection() -> None:
    head = FCNMaskHead(5, conv_channels=C, num_classes=4)
    x, labels = _rois(3, 5), torch.tensor([3, 0, 2])
    full = head.predictor(head.tower(x))
    assert full.shape == (3, 4, 28, 28)
    torch.testing.assert_close(head(x, labels)["mask"], full[torch.arange(3), labels][:, None])
    with pytest.raises(ValueError, match="labels"):
        head(x)
    agnostic = FCNMaskHead(5, conv_channels=C)
    assert agnostic(x)["mask"].shape == (3, 1, 28, 28)
    assert agnostic(x, labels)["mask"].shape == (3, 1, 28, 28)  # labels ignored


def test_guidance_needs_matching_widths() -> None:
    with pytest.raises(ValueError, match="conv_channels"):
        BilayerMaskHead(16, 8)
    assert set(BilayerMaskHead(16, 8, guidance=False)(_rois(1, 16))) >= {"mask", "occluder_mask"}


def test_bad_block_and_loss_weight_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="block"):
        BilayerMaskHead(C, C, block="transformer")
    with pytest.raises(ValueError, match="occluder_msk"):
        BilayerMaskHead(C, C, loss_weights={"occluder_msk": 1.0})


def _conv_params(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout


@pytest.mark.parametrize("width", [16, 64])
def test_parameter_counts_follow_table_3_3(width: int) -> None:
    counts = {name: count_parameters(build_mask_head(name, in_channels=width, conv_channels=width))
              for name in ("fcn", "gcn", "bilayer_fcn", "bcnet")}
    assert counts["fcn"] < counts["gcn"] < counts["bilayer_fcn"] < counts["bcnet"]
    tower = 4 * _conv_params(width, width, 3)
    predictor = _conv_params(width, width, 2) + _conv_params(width, 1, 1)
    nonlocal_block = 4 * width * width + 2 * width  # q, k, v, out (no bias) + BN affine
    assert counts["fcn"] == tower + predictor
    assert counts["gcn"] == tower + predictor + nonlocal_block
    assert counts["bilayer_fcn"] == 2 * tower + 4 * predictor
    assert counts["bcnet"] == 2 * tower + 4 * predictor + 2 * nonlocal_block


def test_zero_logits_give_ln2_times_weights() -> None:
    keys = ("mask", "boundary", "occluder_mask", "occluder_boundary")
    outputs = {k: torch.zeros(4, 1, 28, 28) for k in keys}
    losses = bilayer_mask_loss(outputs, _targets(outputs))
    assert REFERENCE_LOSS_WEIGHTS == {"mask": 1.0, "boundary": 1.0, "occluder_mask": 0.25,
                                      "occluder_boundary": 1.0}
    for k in keys:
        torch.testing.assert_close(losses[f"loss_{k}"], torch.tensor(math.log(2) * REFERENCE_LOSS_WEIGHTS[k]))


def test_loss_matches_hand_computed_bce_and_custom_weights() -> None:
    # logit 2 on a foreground pixel costs log(1 + e^-2); on a background pixel log(1 + e^2).
    outputs = {"mask": torch.full((1, 1, 2, 2), 2.0), "occluder_mask": torch.full((1, 1, 2, 2), 2.0)}
    targets = {"mask": torch.tensor([[[1.0, 1.0], [1.0, 0.0]]]), "occluder_mask": torch.ones(1, 2, 2)}
    losses = mask_head_loss(outputs, targets, {"mask": 1.0, "occluder_mask": 3.0})
    expected_mask = (3 * math.log1p(math.exp(-2)) + math.log1p(math.exp(2))) / 4
    torch.testing.assert_close(losses["loss_mask"], torch.tensor(expected_mask))
    torch.testing.assert_close(losses["loss_occluder_mask"], torch.tensor(3 * math.log1p(math.exp(-2))))
    head = BilayerMaskHead(C, C, occluder_mask=False, loss_weights={"boundary": 0.5})
    out = head(_rois(2))
    zero = {k: torch.zeros_like(v) for k, v in out.items()}
    losses = head.loss(zero, _targets(out))
    assert set(losses) == {"loss_mask", "loss_boundary", "loss_occluder_boundary"}
    torch.testing.assert_close(losses["loss_boundary"], torch.tensor(0.5 * math.log(2)))


def test_missing_target_is_named() -> None:
    outputs = {"mask": torch.zeros(1, 1, 28, 28), "occluder_mask": torch.zeros(1, 1, 28, 28)}
    with pytest.raises(KeyError, match="occluder_mask"):
        mask_head_loss(outputs, {"mask": torch.zeros(1, 28, 28)})


def _grads(head: nn.Module, loss: torch.Tensor) -> dict[str, float]:
    head.zero_grad(set_to_none=True)
    loss.backward()
    return {n: (0.0 if p.grad is None else p.grad.abs().sum().item()) for n, p in head.named_parameters()}


def _reaches(grads: dict[str, float], prefix: str) -> bool:
    return any(v > 0 for n, v in grads.items() if n.startswith(prefix))


@pytest.mark.parametrize("block", ["gcn", "fcn"])
def test_each_loss_term_trains_its_own_branch(block: str) -> None:
    torch.manual_seed(0)
    head = BilayerMaskHead(C, C, block=block)
    x = _rois(4)
    for key in ("mask", "boundary", "occluder_mask", "occluder_boundary"):
        outputs = head(x)
        losses = head.loss(outputs, _targets(outputs))
        grads = _grads(head, losses[f"loss_{key}"])
        assert _reaches(grads, f"predictors.{key}.")
        assert not any(_reaches(grads, f"predictors.{other}.") for other in head.predictors if other != key)
        assert _reaches(grads, "occluder.")  # occluder losses directly, occludee ones via guidance
        assert _reaches(grads, "occludee.") == (key in ("mask", "boundary"))
        if block == "gcn":
            assert _reaches(grads, "occluder.4.")  # the occluder branch's non-local block
            assert _reaches(grads, "occluder.0.")  # and its first conv


def test_without_guidance_occludee_loss_does_not_reach_occluder_branch() -> None:
    torch.manual_seed(0)
    head = BilayerMaskHead(C, C, guidance=False)
    outputs = head(_rois(4))
    losses = head.loss(outputs, _targets(outputs))
    grads = _grads(head, losses["loss_mask"] + losses["loss_boundary"])
    assert _reaches(grads, "occludee.0.") and not _reaches(grads, "occluder.")
    outputs = head(_rois(4))
    grads = _grads(head, head.loss(outputs, _targets(outputs))["loss_occluder_mask"])
    assert _reaches(grads, "occluder.0.") and not _reaches(grads, "occludee.")


def test_baseline_without_occluder_targets_or_guidance_has_no_occluder_branch() -> None:
    head = BilayerMaskHead(C, C, occluder_mask=False, occluder_contour=False, guidance=False)
    assert head.occluder is None
    assert count_parameters(head) < count_parameters(BilayerMaskHead(C, C))


@pytest.mark.parametrize("name", sorted(MASK_HEADS))
def test_zero_rois_give_zero_loss_connected_to_parameters(name: str) -> None:
    head = _build(name).train()
    outputs = head(torch.zeros(0, C, 14, 14), torch.zeros(0, dtype=torch.long))
    assert all(v.shape == ((0, 196, 196) if k == "affinity" else (0, 1, 28, 28)) for k, v in outputs.items())
    losses = head.loss(outputs, {k: torch.zeros(0, 28, 28) for k in outputs})
    total = sum(losses.values())
    assert total.item() == 0 and total.grad_fn is not None
    total.backward()
    assert all(p.grad is not None for p in head.parameters())
    assert all(torch.isfinite(b).all() for b in head.buffers())


def test_probabilities_are_sigmoids_of_the_logits() -> None:
    head = BilayerMaskHead(C, C).eval()
    with torch.no_grad():
        outputs = head(_rois(2), return_maps=True)
    probs = mask_probabilities(outputs)
    assert probs.shape == (2, 1, 28, 28)
    torch.testing.assert_close(probs, outputs["mask"].sigmoid())
    extra = output_probabilities(outputs)
    assert set(extra) == set(outputs)
    assert all(((p >= 0) & (p <= 1)).all() for p in extra.values())


@pytest.mark.parametrize("flags", [{}, {"guidance": False}, {"occludee_contour": False, "occluder_contour": False},
                                   {"block": "fcn"}])
def test_bilayer_inference_without_maps_is_the_with_maps_occludee_mask(flags: dict) -> None:
    """Extra maps are computed at inference only when asked; the occludee mask is the same."""
    torch.manual_seed(0)
    head = BilayerMaskHead(C, C, **flags).eval()
    x = _rois(5)
    with torch.no_grad():
        plain = head(x)
        full = head(x, return_maps=True)
    assert set(plain) == {"mask"} and set(full) == set(head.predictors)
    torch.testing.assert_close(plain["mask"], full["mask"], rtol=0, atol=0)
    assert set(head.train()(x)) == set(full)  # training always computes what the losses need
    assert set(run_head(head.eval(), x, return_maps=True)) == set(full)


def test_inference_without_maps_skips_the_unused_occluder_branch() -> None:
    """Without guidance the occludee mask never reads the occluder tower: it is not run."""
    head = BilayerMaskHead(C, C, guidance=False).eval()
    calls = []
    head.occluder.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        head(_rois(2))
    assert not calls
    with torch.no_grad():
        head(_rois(2), return_maps=True)
    assert calls


def test_run_head_asks_only_heads_with_optional_maps() -> None:
    fcn = FCNMaskHead(C, C).eval()
    assert set(run_head(fcn, _rois(2), return_maps=True)) == {"mask"}  # FCN takes no return_maps
    assert OcclusionRCNNHead.optional_maps == ("visible_mask", "invisible_mask")
    assert BilayerMaskHead.optional_maps == ("boundary", "occluder_mask", "occluder_boundary")
