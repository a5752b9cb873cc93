"""BCNet's bilayer mask head (thesis section 3.2.2) with every ablation switch of Tables 3.1-3.3.

The occluder branch (first layer) reads the ROI features and predicts the occluders' mask and
boundary inside the ROI; its output features are added to the ROI features (the "guidance",
eq. 3.5) and the occludee branch (second layer) predicts the target's mask and boundary.

Where the thesis and the public reference code differ we follow the code:

* the thesis' occluder module is "one 3x3 conv + one GCN layer + one FCN layer"; the code uses
  the same tower as the occludee branch: four 3x3 convs with a non-local block after the 2nd;
* the thesis feeds one up-sampling layer and one 1x1 conv "for joint boundary and mask
  prediction" (eqs. 3.7-3.8 then name separate predictors W_B and W_S on shared features); the
  code gives each of the four outputs its own deconv and 1x1 predictor;
* the code averages the occluder losses over the ROIs with a non-empty occluder target (plus,
  by an indexing slip, as many ROIs from the front of the batch); we average over all ROIs, so
  ROIs without occluders teach the occluder branch to predict nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from instseg.models.mask_heads.fcn import NONLOCAL_AFTER, ConvTower, UpsamplePredictor, mask_head_loss

# Loss weights as the reference code applies them (occluder mask x0.25, the others x1).
REFERENCE_LOSS_WEIGHTS: dict[str, float] = {
    "mask": 1.0, "boundary": 1.0, "occluder_mask": 0.25, "occluder_boundary": 1.0,
}


class BilayerMaskHead(nn.Module):
    """Class-agnostic bilayer occluder/occludee mask head.

    Switches (all on = BCNet): ``block`` "gcn" puts a non-local block in each branch, "fcn" is the
    bilayer FCN of Table 3.3; ``occluder_mask`` / ``occluder_contour`` supervise the occluder
    branch (Table 3.1; both off is its baseline: the bilayer structure without occluder targets);
    ``guidance`` adds the occluder features to the occludee branch's input (Table 3.2; off, the
    occludee branch sees only the ROI features); ``occludee_contour`` adds the occludee boundary
    output. Guidance adds features, so it needs ``in_channels == conv_channels``.
    """

    optional_maps = ("boundary", "occluder_mask", "occluder_boundary")

    def __init__(self, in_channels: int, conv_channels: int = 256, num_convs: int = 4,
                 block: str = "gcn", occluder_mask: bool = True, occluder_contour: bool = True,
                 guidance: bool = True, occludee_contour: bool = True,
                 loss_weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        if block not in ("gcn", "fcn"):
            raise ValueError(f"block must be 'gcn' or 'fcn', not {block!r}")
        if guidance and num_convs and in_channels != conv_channels:
            raise ValueError(f"guidance adds occluder features ({conv_channels} channels) to the ROI "
                             f"features ({in_channels}): set conv_channels = in_channels")
        unknown = set(loss_weights or {}) - set(REFERENCE_LOSS_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown loss weights {sorted(unknown)}; known: {sorted(REFERENCE_LOSS_WEIGHTS)}")
        self.loss_weights = {**REFERENCE_LOSS_WEIGHTS, **(loss_weights or {})}
        self.guidance = guidance
        nonlocal_after = NONLOCAL_AFTER if block == "gcn" else None
        # Without guidance and occluder targets the occluder branch would train nothing: omit it.
        self.occluder = (ConvTower(in_channels, conv_channels, num_convs, nonlocal_after)
                         if guidance or occluder_mask or occluder_contour else None)
        self.occludee = ConvTower(in_channels, conv_channels, num_convs, nonlocal_after)
        enabled = {"mask": True, "boundary": occludee_contour,
                   "occluder_mask": occluder_mask, "occluder_boundary": occluder_contour}
        width = self.occludee.out_channels
        self.predictors = nn.ModuleDict({k: UpsamplePredictor(width) for k, on in enabled.items() if on})

    def forward(self, roi_features: Tensor, labels: Tensor | None = None,
                return_maps: bool = False) -> dict[str, Tensor]:
        """ROI features [R, C, 14, 14] -> logits [R, 1, 28, 28] under "mask" (occludee) and, when
        enabled, "boundary", "occluder_mask", "occluder_boundary". The extra maps are computed in
        training (the losses need them) or with ``return_maps`` (figures, ``--extra-maps``); at
        inference without them only what the occludee mask needs runs (the occluder tower only
        for guidance). ``labels`` is unused (the head is class-agnostic); it is accepted so heads
        are interchangeable."""
        maps = self.training or return_maps
        needs_occluder = self.guidance or (maps and self.occluder_predicts)
        occluder = self.occluder(roi_features) if self.occluder is not None and needs_occluder else None
        occludee_input = roi_features + occluder if self.guidance else roi_features
        occludee = self.occludee(occludee_input)
        features = {"mask": occludee, "boundary": occludee,
                    "occluder_mask": occluder, "occluder_boundary": occluder}
        return {key: predictor(features[key]) for key, predictor in self.predictors.items() if maps or key == "mask"}

    @property
    def occluder_predicts(self) -> bool:
        """Whether the occluder branch has outputs of its own (occluder mask or contour)."""
        return "occluder_mask" in self.predictors or "occluder_boundary" in self.predictors

    def loss(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Weighted BCE terms for the enabled outputs (see ``bilayer_mask_loss``)."""
        return bilayer_mask_loss(outputs, targets, self.loss_weights)


def bilayer_mask_loss(outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor],
                      weights: Mapping[str, float] = REFERENCE_LOSS_WEIGHTS) -> dict[str, Tensor]:
    """``loss_mask``, ``loss_boundary``, ``loss_occluder_mask``, ``loss_occluder_boundary`` (those
    the outputs have), each a mean BCE times its weight; reference weights by default."""
    return mask_head_loss(outputs, targets, weights)
