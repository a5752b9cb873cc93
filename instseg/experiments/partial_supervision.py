"""CPMask's partially supervised (Table 4.1) and few-shot (Table 4.2) settings in miniature.

The protocol, on one frozen detector whose boxes trained on every category (and whose mask
head trained on none, so no novel mask shaped its features):

* **partial supervision**, both directions of a two-way category split: class-agnostic heads
  train on the ROIs of the base categories only (:meth:`RoiCache.of_categories`), and are scored
  with mask AP over the novel categories; oracles train on every category; Mask GrabCut needs no
  mask at all;
* **few-shot**: a head trained on the base half is fine-tuned on ``shots`` annotated instances per
  novel category (:func:`instseg.data.splits.few_shot_annotation_ids`, one draw per seed); "no
  base" trains a fresh head on those instances alone, with the full schedule. Unlike the
  paper's few-shot setting (Meta R-CNN's), the detector's boxes are not few-shot here: only the
  masks are, so our absolute numbers are far above the paper's and only the orderings compare.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
from torch import Tensor, nn

from instseg.data.dataset import CocoInstanceDataset
from instseg.data.splits import category_split, few_shot_annotation_ids
from instseg.evaluation import evaluate
from instseg.experiments.frozen_heads import (
    AblationConfig,
    AblationRun,
    EvalInputs,
    EvalSet,
    HeadVariant,
    RoiCache,
    detections_of_categories,
    evaluate_head,
    train_head,
)
from instseg.models.grabcut import grabcut_results
from instseg.models.mask_heads import count_parameters, detector_inputs

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# our split half -> the paper's name for the half in the same role (A holds the "voc" role)
PAPER_SPLIT_NAMES = {"A": "voc", "B": "non-voc", "voc": "voc", "nonvoc": "non-voc"}


@dataclass(frozen=True)
class Direction:
    """Masks of ``base`` train; ``novel`` is scored."""

    base_name: str
    novel_name: str
    base: tuple[int, ...]
    novel: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"{self.base_name} → {self.novel_name}"

    @property
    def paper_name(self) -> str:
        return f"{PAPER_SPLIT_NAMES.get(self.base_name, self.base_name)} → " \
               f"{PAPER_SPLIT_NAMES.get(self.novel_name, self.novel_name)}"


def directions(categories: Sequence[dict], halves: tuple[str, str]) -> list[Direction]:
    """Both directions of the split into ``halves`` (e.g. ("A", "B") or ("voc", "nonvoc"))."""
    first, second = category_split(categories, halves[0])
    return [Direction(halves[0], halves[1], tuple(first), tuple(second)),
            Direction(halves[1], halves[0], tuple(second), tuple(first))]


def _variant(head: str, base: tuple[int, ...] | None, tag: str, label: str, **kwargs: Any) -> HeadVariant:
    return HeadVariant(f"{head}_{tag}", head, dict(kwargs), occluder_rule="none", mask_categories=base, label=label)


def partial_variants(dirs: Sequence[Direction], ablation: bool = False, detector: nn.Module | None = None,
                     class_embeddings: Tensor | None = None) -> list[HeadVariant]:
    """Per direction the class-agnostic Mask R-CNN head and CPMask on the base masks, and, given
    the frozen ``detector``, the MaskX-style weight-transfer head, which reads its class
    embeddings from the detector's box predictor when it is built (with ``ablation``, also CPMask
    without the boundary module, without the affinity unit and with an unsupervised affinity);
    then the two oracles, on every mask. ``class_embeddings`` (those of
    :func:`~instseg.models.mask_heads.maskx.box_predictor_embeddings`) may stand in for the
    detector; either way they are build inputs of the variant, not hyperparameters."""
    if detector is not None and class_embeddings is not None:
        raise ValueError("give the detector or its class embeddings, not both")
    maskx_inputs = (detector_inputs("maskx", detector) if detector is not None
                    else None if class_embeddings is None else {"class_embeddings": class_embeddings})
    variants = []
    for d in dirs:
        variants += [_variant("fcn", d.base, d.base_name, "Mask R-CNN (class-agnostic)"),
                     _variant("cpmask", d.base, d.base_name, "CPMask")]
        if maskx_inputs is not None:
            variants.append(replace(_variant("maskx", d.base, d.base_name, "MaskX R-CNN (weight transfer)"),
                                    inputs=maskx_inputs))
        if ablation:
            variants += [
                HeadVariant(f"cpmask_noboundary_{d.base_name}", "cpmask", {"boundary": False}, "none",
                            mask_categories=d.base, label="CPMask without boundary parsing"),
                HeadVariant(f"cpmask_noaffinity_{d.base_name}", "cpmask",
                            {"affinity": False, "affinity_supervision": False}, "none",
                            mask_categories=d.base, label="CPMask without affinity parsing"),
                HeadVariant(f"cpmask_unsupervised_{d.base_name}", "cpmask", {"affinity_supervision": False}, "none",
                            mask_categories=d.base, label="CPMask, affinity unsupervised"),
            ]
    return variants + [_variant("fcn", None, "oracle", "Oracle Mask R-CNN"),
                       _variant("cpmask", None, "oracle", "Oracle CPMask")]


def novel_eval_sets(gt: dict, dataset: CocoInstanceDataset, dirs: Sequence[Direction]) -> dict[str, EvalSet]:
    """One eval set per direction, scoring its novel categories: ``novel_<novel_name>``."""
    return {f"novel_{d.novel_name}": EvalSet(gt, dataset, category_ids=d.novel) for d in dirs}


def long_rows(run: AblationRun, dirs: Sequence[Direction]) -> pd.DataFrame:
    """``run``'s metrics as one row per (direction, variant, seed) with the novel metrics of that
    direction, read from its tidy rows: the heads trained on the direction's base masks, and the
    oracles (trained on every mask)."""
    described = run.runs[["variant", "label", "seed", "params", "seconds_per_iter"]]
    parts = []
    for d in dirs:
        mine = [name for name, v in run.variants.items() if v.mask_categories in (None, d.base)]
        tidy = run.tidy[(run.tidy["eval_set"] == f"novel_{d.novel_name}") & run.tidy["variant"].isin(mine)]
        metrics = tidy.pivot(index=["variant", "seed"], columns="metric", values="value")[list(METRICS)]
        parts.append(described.merge(metrics.reset_index().rename_axis(columns=None), on=["variant", "seed"])
                     .assign(direction=d.name))
    rows = pd.concat(parts, ignore_index=True)
    return rows[["direction", *described.columns, *METRICS]]


def grabcut_rows(inputs: EvalInputs, dataset: CocoInstanceDataset, gt: dict, dirs: Sequence[Direction],
                 iterations: int = 5, seeds: Sequence[int] = (0,)) -> pd.DataFrame:
    """Mask GrabCut on the boxes the heads are evaluated on (``inputs``) of each direction's novel
    categories. It has no randomness, so its one result stands for every seed of ``seeds`` (one
    identical row each), which lets it pair with the heads' seeds."""
    images = [dataset[i][0] for i in range(len(dataset))]
    rows = []
    for d in dirs:
        dets = detections_of_categories(inputs.detections(dataset, False), dataset, set(d.novel))
        results = grabcut_results(images, dataset.image_ids, dets, dataset.label_to_category_id, iterations)
        metrics = evaluate(gt, results, "segm", category_ids=d.novel)
        rows += [{"direction": d.name, "variant": "grabcut", "label": "Mask GrabCut", "seed": seed, "params": 0,
                  **{m: metrics[m] for m in METRICS}} for seed in seeds]
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class FewShotConfig:
    """Fine-tuning budget of Table 4.2 (the "no base" head gets the full ablation schedule)."""

    shots: tuple[int, ...] = (10, 20)
    iters: int = 100
    lr: float = 5e-4


def run_few_shot(inputs: EvalInputs, train_gt: dict, cache: RoiCache, base_heads: Mapping[int, Mapping[str, nn.Module]],
                 direction: Direction, eval_set: EvalSet, seeds: Sequence[int], cfg: AblationConfig,
                 few: FewShotConfig, variants: Mapping[str, HeadVariant]) -> pd.DataFrame:
    """Rows (shots, method, seed, metrics) of Table 4.2 for ``direction``'s novel categories.

    ``base_heads[seed][name]`` are heads trained on the base masks (keys of ``variants``:
    "fcn", "cpmask"); each is fine-tuned on the seed's draw of ``shots`` instances per novel
    category; "cpmask_nobase" trains CPMask from scratch on that draw alone. ``inputs`` holds the
    frozen detector's detections and features (e.g. those of the Table 4.1 run).
    """
    inputs.check(cfg.boxes)
    sets = {"novel": eval_set}
    rows = []
    for shots in few.shots:
        for seed in seeds:
            drawn = few_shot_annotation_ids(train_gt, direction.novel, shots, seed)
            subset = cache.of_annotations(drawn)
            runs = {
                "Mask R-CNN-ft": (variants["fcn"], few.iters, few.lr, base_heads[seed]["fcn"]),
                "CPMask (fine-tuned)": (variants["cpmask"], few.iters, few.lr, base_heads[seed]["cpmask"]),
                "CPMask (no base)": (variants["cpmask"], cfg.iters, cfg.lr, None),
            }
            for method, (variant, iters, lr, init) in runs.items():
                plain = HeadVariant(variant.name, variant.head, variant.head_kwargs, "none", label=method,
                                    inputs=variant.inputs)
                head = train_head(plain, subset, iters, cfg.batch_rois, lr, seed, cfg.channels, cfg.optimizer,
                                  init=init)
                scores = evaluate_head(head, False, sets, inputs, cfg.bins).scores["novel"]
                rows.append({"shots": shots, "method": method, "seed": seed, "instances": len(drawn),
                             "rois": len(subset), "iters": iters, "params": count_parameters(head),
                             "train_seconds": head.train_seconds, "final_loss": head.loss_curve[-1],
                             **{m: scores[m] for m in METRICS}})
    return pd.DataFrame(rows)
