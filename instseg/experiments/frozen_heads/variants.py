"""What a head ablation compares: table rows as head variants, and what makes two rows one
experiment.

Why a module of their own: the rows are data that the notebooks, the paper mapping
(:mod:`instseg.experiments.verdicts`) and the protocol all name, while the cache, training and
evaluation modules only need a variant's head and training targets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from instseg.models.mask_heads import build_mask_head, detector_inputs, head_hyperparameters


@dataclass(frozen=True)
class HeadVariant:
    """One table row: a head (a name in :data:`~instseg.models.mask_heads.MASK_HEADS`) with its
    switches and training targets.

    ``occluder_rule`` is the rule of :func:`~instseg.models.mask_heads.mask_head_targets` ("auto":
    "depth" when the data carries depth, else "reference"); ``amodal`` trains (and evaluates) on
    amodal masks, with ROIs around the amodal boxes. ``mask_categories`` (partial supervision): only
    ROIs of instances of these category ids train the head (None: all); it needs
    ``occluder_rule="none"``, whose targets come from the ROI's own instance alone.

    ``head_kwargs`` are plain hyperparameters (what :func:`config_key` keys a trained head by).
    ``inputs`` are what a head derives from the frozen detector (MaskX's class embeddings: see
    :meth:`for_detector`); they are not hyperparameters, so they stay out of the key and out of
    comparisons (one ablation run has one detector).
    """

    name: str
    head: str
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    occluder_rule: str = "auto"
    amodal: bool = False
    label: str = ""
    mask_categories: tuple[int, ...] | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.mask_categories is not None and self.occluder_rule != "none":
            raise ValueError(f"variant {self.name!r}: partial supervision needs occluder_rule='none' (occluder "
                             "targets would be built from the masks of unsupervised instances)")
        head_hyperparameters(self.head, self.head_kwargs)  # fail here on an unknown head or a non-plain value

    def for_detector(self, detector: nn.Module) -> HeadVariant:
        """This variant with the inputs its head reads from ``detector`` (none for most heads)."""
        return replace(self, inputs=detector_inputs(self.head, detector))


def _bcnet(name: str, label: str, **flags: bool) -> HeadVariant:
    return HeadVariant(name, "bcnet", flags, label=label)


# Table 3.1: occluder targets of the first GCN; occludee contour off (that is Table 3.2's subject).
TABLE_3_1 = (
    _bcnet("t31_baseline", "baseline", occluder_mask=False, occluder_contour=False, occludee_contour=False),
    _bcnet("t31_mask", "occluder mask", occluder_mask=True, occluder_contour=False, occludee_contour=False),
    _bcnet("t31_contour", "occluder contour", occluder_mask=False, occluder_contour=True, occludee_contour=False),
    _bcnet("t31_contour_mask", "occluder contour + mask", occluder_mask=True, occluder_contour=True,
           occludee_contour=False),
)
# Table 3.2: the second GCN; row 2 is Table 3.1's last row, row 3 the full BCNet.
TABLE_3_2 = (
    _bcnet("t32_mask", "mask", guidance=False, occludee_contour=False),
    _bcnet("t32_guidance_mask", "guidance + mask", occludee_contour=False),
    _bcnet("t32_guidance_contour_mask", "guidance + contour + mask"),
)
# Table 3.3: structure. All heads are class-agnostic, so the rows differ only in structure.
TABLE_3_3 = (
    HeadVariant("t33_single_fcn", "fcn", label="single layer, FCN"),
    HeadVariant("t33_single_gcn", "gcn", label="single layer, GCN"),
    HeadVariant("t33_bilayer_fcn", "bilayer_fcn", label="bilayer, FCN"),
    HeadVariant("t33_bilayer_gcn", "bcnet", label="bilayer, GCN (BCNet)"),
)
# Tables 3.5 (COCOA) and 3.6 (KINS): amodal heads, scored with amodal AP. Here both run on the one
# benchmark, and Table 3.6's rows are configurations of Table 3.5 (same config_key): trained once.
TABLE_3_5 = (
    HeadVariant("t35_amodal_mrcnn", "fcn", amodal=True, label="AmodalMRCNN (Mask R-CNN on amodal masks)"),
    HeadVariant("t35_orcnn", "orcnn", amodal=True, label="ORCNN (amodal + visible heads, occlusion mask)"),
    HeadVariant("t35_bcnet", "bcnet", amodal=True, label="BCNet"),
)
TABLE_3_6 = (
    HeadVariant("t36_mask_rcnn", "fcn", amodal=True, label="Mask R-CNN (amodal masks)"),
    HeadVariant("t36_bcnet", "bcnet", amodal=True, label="BCNet"),
)

# Notebook 01's studies, each switchable per scale (``ablation.tables`` in params.yaml): a scale whose
# time budget cannot give every row a converged head runs fewer studies, never shorter heads.
# The headline's rows (the FCN head, the bilayer head with occluder targets off and on, the full
# BCNet) train at every scale, whatever the list says.
TABLES = {"table_3_1": TABLE_3_1, "table_3_2": TABLE_3_2, "table_3_3": TABLE_3_3}
STUDIES = (*TABLES, "table_3_4", "synthetic_occlusion")  # 3.4: the FCOS detector; synthetic: extra data
HEADLINE_ROWS = (TABLE_3_3[0], TABLE_3_1[0], TABLE_3_1[3], TABLE_3_3[3])


def ablation_variants(tables: Sequence[str]) -> tuple[HeadVariant, ...]:
    """The rows notebook 01 trains on the frozen Faster R-CNN: the headline's, then those of each of
    ``tables`` (names in :data:`TABLES`; other studies add no rows here), each row once."""
    unknown = sorted(set(tables) - set(STUDIES))
    if unknown:
        raise ValueError(f"unknown studies {unknown}; choose from {list(STUDIES)}")
    rows: dict[str, HeadVariant] = {}
    for v in (*HEADLINE_ROWS, *(v for t in TABLES if t in tables for v in TABLES[t])):
        rows.setdefault(v.name, v)
    return tuple(rows.values())


def build_head(variant: HeadVariant, in_channels: int, channels: int, detector: nn.Module | None = None) -> nn.Module:
    """The variant's head, ``channels`` wide (the same for every row of a table), from the one
    registry (:func:`~instseg.models.mask_heads.build_mask_head`). A head with detector-derived
    inputs reads them from ``detector`` when given, else takes the variant's ``inputs``."""
    inputs = {} if detector is not None else dict(variant.inputs)
    return build_mask_head(variant.head, in_channels, channels, detector=detector, **variant.head_kwargs, **inputs)


def config_key(variant: HeadVariant) -> tuple:
    """What a trained head depends on: the head's registry name and its plain hyperparameters,
    defaults filled in, then the training targets. Variants with equal keys (e.g. Table 3.2 row 3
    and Table 3.3 row 4) are the same experiment and are trained once. The width
    (``conv_channels``) is the table's, and detector-derived inputs are the run's detector's, so
    neither is part of the key."""
    hyper = head_hyperparameters(variant.head, variant.head_kwargs)
    arguments = tuple(sorted((k, repr(v)) for k, v in hyper.items() if k != "conv_channels"))
    return (variant.head, arguments, variant.occluder_rule, variant.amodal, variant.mask_categories)


def unique_variants(variants: Sequence[HeadVariant]) -> dict[tuple, list[HeadVariant]]:
    """Variants grouped by :func:`config_key`, in first-seen order; repeated identical variants
    (a row listed in two tables) collapse, and two different variants may not share a name."""
    groups: dict[tuple, list[HeadVariant]] = {}
    by_name: dict[str, HeadVariant] = {}
    for variant in variants:
        if variant.name in by_name:
            if by_name[variant.name] != variant:
                raise ValueError(f"two different variants are named {variant.name!r}")
            continue
        by_name[variant.name] = variant
        groups.setdefault(config_key(variant), []).append(variant)
    return groups
