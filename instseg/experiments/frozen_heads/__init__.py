"""Mask-head ablations on one frozen, shared detector (BCNet Tables 3.1-3.6, CPMask Tables 4.1-4.2
in miniature).

Why: on 2 CPU cores a detector per table row and seed would cost hours per row. DESIGN allows the
head ablations to train the mask head alone on a frozen detector, so here

1. the detector's backbone runs once per training image, and the 14x14 ROI features of the
   ground-truth boxes plus jittered copies of them (simulated proposals) are cached in float16
   with all their 28x28 targets (:func:`cache_roi_features`, :mod:`.roi_cache`);
2. each head trains on seeded random minibatches of cached ROIs through the engine's trainer
   (:func:`train_head`, :mod:`.training`);
3. every head is evaluated on the same detections of the same detector, computed once
   (:func:`detector_detections`), on backbone features computed once (:func:`image_features`),
   so AP differences between heads come from their masks alone (:func:`predict_masks`,
   :mod:`.prediction`).

:func:`run_ablation` (:mod:`.protocol`) runs variants x seeds (:class:`HeadVariant` and the
tables' rows: :mod:`.variants`), training a configuration shared by several table rows once, and
returns an :class:`AblationRun`: tidy metric rows, the wide per-run table built from them, and the
results, heads, caches and eval inputs of the run. :func:`save_head` / :func:`load_head`
(:mod:`.head_io`) keep trained heads for later notebooks.

Use it as ``from instseg.experiments import frozen_heads as fh``; the names below are its API.
"""

from instseg.experiments.frozen_heads.head_io import HEAD_FORMAT, load_head, save_head
from instseg.experiments.frozen_heads.prediction import (
    PREDICT_IMAGES,
    SEGM_METRICS,
    EvalInputs,
    EvalSet,
    HeadEvaluation,
    ImageFeatures,
    detections_of_categories,
    detector_detections,
    evaluate_head,
    gt_detections,
    image_features,
    predict_masks,
    score,
)
from instseg.experiments.frozen_heads.protocol import (
    TIDY_COLUMNS,
    AblationConfig,
    AblationRun,
    metric_column,
    run_ablation,
    wide_runs,
)
from instseg.experiments.frozen_heads.roi_cache import (
    BACKBONE_BATCH,
    HEAD_BATCH,
    JITTER,
    MIN_JITTER_IOU,
    BackboneOutput,
    RoiCache,
    cache_roi_features,
    jitter_boxes,
    roi_features,
    roi_targets,
)
from instseg.experiments.frozen_heads.training import (
    DECAY_AT,
    VAL_POINTS,
    RoiBatches,
    roi_head_loss,
    train_head,
    validation_rois,
)
from instseg.experiments.frozen_heads.variants import (
    HEADLINE_ROWS,
    STUDIES,
    TABLE_3_1,
    TABLE_3_2,
    TABLE_3_3,
    TABLE_3_5,
    TABLE_3_6,
    TABLES,
    HeadVariant,
    ablation_variants,
    build_head,
    config_key,
    unique_variants,
)

__all__ = [
    "BACKBONE_BATCH", "DECAY_AT", "HEAD_BATCH", "HEAD_FORMAT", "JITTER", "MIN_JITTER_IOU", "PREDICT_IMAGES",
    "HEADLINE_ROWS", "SEGM_METRICS", "STUDIES", "TABLES", "TABLE_3_1", "TABLE_3_2", "TABLE_3_3", "TABLE_3_5",
    "TABLE_3_6", "TIDY_COLUMNS", "VAL_POINTS",
    "AblationConfig", "AblationRun", "BackboneOutput", "EvalInputs", "EvalSet", "HeadEvaluation", "HeadVariant",
    "ImageFeatures", "RoiBatches", "RoiCache", "ablation_variants", "build_head", "cache_roi_features", "config_key",
    "detections_of_categories", "detector_detections", "evaluate_head", "gt_detections", "image_features",
    "jitter_boxes", "load_head", "metric_column", "predict_masks", "roi_features", "roi_head_loss", "roi_targets",
    "run_ablation", "save_head", "score", "train_head", "unique_variants", "validation_rois", "wide_runs",
]
