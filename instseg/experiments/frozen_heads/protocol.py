"""The ablation protocol: variants x seeds on one frozen detector, each distinct configuration
trained once per seed, every head scored on the same detections.

Why a module: this is the one place that ties the cache, training and evaluation together and
decides what a run returns: tidy metric rows as the primary record (one per variant, config, seed,
eval set and metric), the wide per-run table the notebooks read built from them, and the results,
heads, caches and eval inputs a later step (paired statistics, figures, more heads) reuses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from torch import nn

from instseg.data.dataset import CocoInstanceDataset
from instseg.engine.config import OPTIMIZERS
from instseg.evaluation import DEFAULT_BINS
from instseg.experiments.frozen_heads.prediction import EvalInputs, EvalSet, evaluate_head
from instseg.experiments.frozen_heads.roi_cache import RoiCache, cache_roi_features
from instseg.experiments.frozen_heads.training import train_head
from instseg.experiments.frozen_heads.variants import HeadVariant, unique_variants
from instseg.models.mask_heads import count_parameters

TIDY_COLUMNS = ("variant", "config", "seed", "eval_set", "metric", "value")


@dataclass(frozen=True)
class AblationConfig:
    """Budget knobs of a head ablation (``channels`` is the same for every variant of a table).

    ``boxes``: "detector" evaluates on the frozen detector's detections; "gt" on ground-truth boxes
    with score 1 (amodal boxes for amodal variants), which isolates mask quality. Amodal variants
    with "detector" need a detector whose boxes are amodal boxes.
    """

    iters: int = 1500
    batch_rois: int = 32
    lr: float = 1e-3
    optimizer: str = "adamw"
    channels: int = 64
    jitter_per_gt: int = 2
    train_images: int | None = None  # the first N images of the training set (None: all)
    cache_seed: int = 0
    val_images: int = 64  # held-out images whose ROIs give each run's validation loss (plateau check)
    val_rois: int = 512
    jitter_draw: float = 0.75  # each seed trains on its own draw of this share of the jittered ROIs
    boxes: str = "detector"
    bins: tuple[tuple[float, float], ...] | None = DEFAULT_BINS

    def __post_init__(self) -> None:  # fail before any cache is built
        if self.boxes not in ("detector", "gt"):
            raise ValueError(f"boxes must be 'detector' or 'gt', not {self.boxes!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}")


@dataclass
class AblationRun:
    """What :func:`run_ablation` returns.

    ``tidy`` is the primary record: one row per (variant, config, seed, eval_set, metric, value),
    segm metrics in percent (amodal AP for amodal variants). ``runs`` is one row per (variant,
    seed), built from ``tidy`` (:func:`wide_runs`): variant, label, config (the variant trained for
    it), head, amodal, seed, params, train/predict/eval seconds, final loss, the loss and
    validation curves, the plateau check, and a column ``{eval_set}_{metric}`` per metric (e.g.
    ``val_occ_AP``, ``val_AP_occ_0_0.1``). ``results[(variant, seed, eval_set)]`` are the COCO
    results (for paired statistics); ``heads[(variant, seed)]`` the trained heads (variants of one
    configuration share one); ``caches`` the training ROI caches under (occluder rule, amodal) and
    the validation ones under ("val", occluder rule, amodal), those given and those built;
    ``inputs`` the detections and backbone features of the eval datasets; ``variants`` the
    variants by name, in the order given.
    """

    runs: pd.DataFrame
    tidy: pd.DataFrame
    results: dict[tuple[str, int, str], list[dict]]
    heads: dict[tuple[str, int], nn.Module]
    caches: dict[tuple, RoiCache]
    inputs: EvalInputs
    variants: dict[str, HeadVariant]


def metric_column(eval_set: str, metric: str) -> str:
    """The wide table's column of ``metric`` on ``eval_set`` (e.g. "val_occ_AP"): built, never parsed."""
    return f"{eval_set}_{metric}"


def wide_runs(info: pd.DataFrame, tidy: pd.DataFrame) -> pd.DataFrame:
    """``info`` (one row per variant and seed, no metric) with the ``tidy`` metrics pivoted in as
    columns (:func:`metric_column`, in first-seen order), placed before ``eval_seconds`` where
    ``info`` has it."""
    columns = [metric_column(s, m) for s, m in zip(tidy["eval_set"], tidy["metric"])]
    metrics = (tidy.assign(column=columns).pivot(index=["variant", "seed"], columns="column", values="value")
               .reindex(columns=list(dict.fromkeys(columns))))
    metrics.columns.name = None
    wide = info.join(metrics, on=["variant", "seed"])
    order = [c for c in info.columns if c != "eval_seconds"] + list(metrics.columns)
    return wide[order + [c for c in info.columns if c == "eval_seconds"]]


def _caches_of(trained: HeadVariant, caches: dict[tuple, RoiCache], detector: nn.Module,
               train_set: CocoInstanceDataset, val_set: CocoInstanceDataset, cfg: AblationConfig
               ) -> tuple[RoiCache, RoiCache]:
    """The training and validation caches ``trained`` needs, built into ``caches`` when missing,
    narrowed to its ``mask_categories`` (partial supervision)."""
    key = (trained.occluder_rule, trained.amodal)
    if key not in caches:
        indices = list(range(len(train_set)))[:cfg.train_images]
        caches[key] = cache_roi_features(detector, train_set, indices, cfg.jitter_per_gt, cfg.cache_seed, *key)
    if ("val", *key) not in caches:
        caches[("val", *key)] = cache_roi_features(detector, val_set, range(min(cfg.val_images, len(val_set))),
                                                   cfg.jitter_per_gt, cfg.cache_seed, *key)
    cache, val_cache = caches[key], caches[("val", *key)]
    if trained.mask_categories is not None:
        return cache.of_categories(trained.mask_categories), val_cache.of_categories(trained.mask_categories)
    return cache, val_cache


def run_ablation(variants: Sequence[HeadVariant], seeds: Sequence[int], detector: nn.Module,
                 train_set: CocoInstanceDataset, eval_sets: Mapping[str, EvalSet | tuple], cfg: AblationConfig,
                 caches: Mapping[tuple, RoiCache] | None = None, inputs: EvalInputs | None = None,
                 val_set: CocoInstanceDataset | None = None) -> AblationRun:
    """Train every distinct configuration of ``variants`` once per seed on the frozen ``detector``
    and score it on every eval set (``name -> EvalSet`` or ``(gt, dataset[, image_ids])``).

    Variants with ``mask_categories`` train on the ROIs of those categories only (partial
    supervision), from the same cache. Everything but the timing is identical for a given seed.
    ``caches`` (e.g. another run's, or a cache extended by :meth:`RoiCache.concat`) and ``inputs``
    (detections and features of the eval datasets) are used where they hold what a variant needs,
    so runs on one detector can share them; the run's own are in the returned
    :class:`AblationRun`, and the ``caches`` mapping given is left as it is. ``val_set`` (default:
    the first eval set's dataset) gives the first ``cfg.val_images`` images whose ROIs measure
    each run's validation loss, for the plateau check.
    """
    sets = {name: es if isinstance(es, EvalSet) else EvalSet(*es) for name, es in eval_sets.items()}
    val_set = next(iter(sets.values())).dataset if val_set is None else val_set
    inputs = EvalInputs(detector, cfg.boxes) if inputs is None else inputs.check(cfg.boxes, detector)
    caches = dict(caches or {})
    info: dict[str, list[dict[str, Any]]] = {}
    scores: dict[str, list[dict[str, Any]]] = {}
    results: dict[tuple[str, int, str], list[dict]] = {}
    heads: dict[tuple[str, int], nn.Module] = {}
    for members in unique_variants(variants).values():
        trained = members[0]
        cache, val_cache = _caches_of(trained, caches, detector, train_set, val_set, cfg)
        for seed in seeds:
            head = train_head(trained, cache, cfg.iters, cfg.batch_rois, cfg.lr, seed, cfg.channels,
                              cfg.optimizer, val_cache=val_cache, val_rois=cfg.val_rois, jitter_draw=cfg.jitter_draw)
            evaluation = evaluate_head(head, trained.amodal, sets, inputs, cfg.bins)
            common = {"config": trained.name, "head": trained.head, "amodal": trained.amodal, "seed": seed,
                      "params": count_parameters(head), "train_seconds": head.train_seconds,
                      "seconds_per_iter": head.train_seconds / cfg.iters, "final_loss": head.loss_curve[-1],
                      "loss_curve": head.loss_curve, "val_curve": head.val_curve,
                      "plateau_passed": head.plateau.passed, "plateau_improvement": head.plateau.improvement,
                      "plateau": head.plateau.as_dict(), "predict_seconds": evaluation.predict_seconds,
                      "eval_seconds": evaluation.eval_seconds}
            for variant in members:
                info.setdefault(variant.name, []).append({"variant": variant.name, "label": variant.label, **common})
                scores.setdefault(variant.name, []).extend(
                    {"variant": variant.name, "config": trained.name, "seed": seed, "eval_set": name, "metric": metric,
                     "value": value}
                    for name, metrics in evaluation.scores.items() for metric, value in metrics.items())
                heads[(variant.name, seed)] = head
                results |= {(variant.name, seed, name): records for name, records in evaluation.results.items()}
    by_name = {v.name: v for v in variants}
    tidy = pd.DataFrame([row for name in by_name for row in scores.get(name, [])], columns=list(TIDY_COLUMNS))
    info_rows = pd.DataFrame([row for name in by_name for row in info.get(name, [])])
    return AblationRun(wide_runs(info_rows, tidy), tidy, results, heads, caches, inputs, by_name)
