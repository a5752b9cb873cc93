"""The tracking-by-detection baselines of notebook 04, run as one experiment: the frozen image
detector once over the train and val videos, the mask-IoU tracker (no trained part), and the
QDTrack-style tracker with an embedding head trained per seed; every tracker scored on the same
cached val detections.

Why on the same detections: the two trackers then differ only in how they link detections, so
their difference is what appearance embeddings buy (the frozen-detector protocol of the image
work). The detector is the image benchmark's Faster R-CNN, reused unchanged (not fine-tuned on
frames): the video benchmark draws its frames with the image renderer and categories.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from instseg.engine.runs import load_run
from instseg.video.data.kitti_mots import read_mots_dir
from instseg.video.data.ytvis import load_ytvis_gt
from instseg.video.models.trackers.base import config_from_dict
from instseg.video.tracking.detection_cache import detect_videos
from instseg.video.tracking.embedding_training import EmbeddingTraining, train_embedding
from instseg.video.tracking.evaluate import TrackingScores, evaluate_tracking, frame_ap, track_videos
from instseg.video.tracking.runs import TrackerSpec, build_tracker, save_tracker_run


@dataclass(frozen=True)
class TrackingSetup:
    """params.yaml ``video.scales.<s>.tracking``."""

    detector: str = "frcnn"  # a detector run under the runs folder
    seeds: tuple[int, ...] = (0, 1, 2)
    embedding: EmbeddingTraining = field(default_factory=EmbeddingTraining)
    mask_iou: dict[str, Any] = field(default_factory=dict)
    quasi_dense: dict[str, Any] = field(default_factory=dict)
    min_gap: int = 4  # identity recovery: gaps of at least this many fully hidden frames
    grace: int = 3  # ... re-found within this many frames of the reappearance
    val_loss_videos: int = 8  # val videos whose key/reference pairs give the embedding's validation loss
    batch_size: int = 8  # frames per detector call

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrackingSetup:
        values = dict(values)
        if "seeds" in values:
            values["seeds"] = tuple(values["seeds"])
        if "embedding" in values:
            values["embedding"] = EmbeddingTraining.from_dict(values["embedding"])
        return config_from_dict(cls, values, "video tracking")


@dataclass
class BaselineResults:
    """Per tracker and seed: the scores; ``runs`` holds one row per (tracker, seed) with every
    summary metric; ``training`` one row per embedding run (seconds, plateau check)."""

    scores: dict[tuple[str, int], TrackingScores]
    runs: pd.DataFrame
    training: pd.DataFrame
    seconds: dict[str, float]
    frame_ap: dict[str, float | None]  # the detector on the frames as images: the ceiling of linking


def run_baselines(setup: TrackingSetup, data_root: str | Path, runs_root: str | Path,
                  trackers_dir: str | Path | None = None, split: str = "val", resume: bool = True) -> BaselineResults:
    """Detect once with ``runs_root/<detector>``, train the embedding heads
    (``<trackers_dir>/quasi_dense_s<seed>``, resumable; default ``runs_root/trackers``), track and
    score ``split``. ``<trackers_dir>/mask_iou`` and each embedding run are tracker runs that
    ``instseg track --checkpoint`` reads."""
    root, detector_run = Path(data_root), Path(runs_root) / setup.detector
    runs_dir = Path(trackers_dir) if trackers_dir is not None else Path(runs_root) / "trackers"
    detector, spec = load_run(detector_run)
    l2c = spec.label_to_category_id
    gt = {s: load_ytvis_gt(root / "annotations" / f"{s}.json") for s in ("train", split)}
    gt_mots = read_mots_dir(root / "mots" / split)
    seconds: dict[str, float] = {}
    tic = time.perf_counter()
    train = detect_videos(detector, l2c, gt["train"], root / "frames", training=True, batch_size=setup.batch_size)
    val_ids = sorted(v["id"] for v in gt[split]["videos"])
    val_pairs = detect_videos(detector, l2c, gt[split], root / "frames", video_ids=val_ids[:setup.val_loss_videos],
                              training=True, batch_size=setup.batch_size)
    evaluated = detect_videos(detector, l2c, gt[split], root / "frames", with_features=True,
                              batch_size=setup.batch_size)
    seconds["detect"] = time.perf_counter() - tic
    detector_on_frames = frame_ap(gt[split], evaluated)

    scores: dict[tuple[str, int], TrackingScores] = {}
    tic = time.perf_counter()
    save_tracker_run(runs_dir / "mask_iou", TrackerSpec("mask_iou", str(detector_run), dict(setup.mask_iou)))
    iou_scores = evaluate_tracking(gt[split], track_videos(evaluated, build_tracker("mask_iou", setup.mask_iou)),
                                   gt_mots, setup.min_gap, setup.grace)
    for seed in setup.seeds:  # no trained part: one run, the same for every seed
        scores[("mask_iou", seed)] = iou_scores
    seconds["mask_iou"] = time.perf_counter() - tic

    training = []
    for seed in setup.seeds:
        tic = time.perf_counter()
        run_dir = runs_dir / f"quasi_dense_s{seed}"
        run = train_embedding(setup.embedding, train, val_pairs, seed, out_dir=run_dir, resume=resume)
        in_channels = int(train[0].detections[0].roi_features.shape[1])
        save_tracker_run(run_dir, TrackerSpec("quasi_dense", str(detector_run), dict(setup.quasi_dense),
                                              setup.embedding.head_kwargs(in_channels)))
        tracked = track_videos(evaluated, build_tracker("quasi_dense", setup.quasi_dense), run.head)
        scores[("quasi_dense", seed)] = evaluate_tracking(gt[split], tracked, gt_mots, setup.min_gap, setup.grace)
        training.append({"seed": seed, "seconds": run.seconds, "plateau_passed": run.plateau.passed,
                         "tail_improvement": run.plateau.improvement,
                         "phase_improvement": run.plateau.phase_improvement, **run.final_loss})
        seconds[f"quasi_dense_s{seed}"] = time.perf_counter() - tic
    runs = pd.DataFrame([{"tracker": name, "seed": seed, **s.summary} for (name, seed), s in scores.items()])
    return BaselineResults(scores, runs, pd.DataFrame(training), seconds, detector_on_frames)


def per_video_table(results: BaselineResults, tracker: str, metric: str, seeds: Sequence[int]) -> pd.DataFrame:
    """``metric`` per val video (index) and seed (columns): the unit of the paired interval."""
    return pd.DataFrame({seed: results.scores[(tracker, seed)].per_video[metric] for seed in seeds})


def recovery_table(results: BaselineResults, tracker: str, seeds: Sequence[int]) -> pd.DataFrame:
    """1.0 / 0.0 per full-occlusion event (index: video, GT id, first hidden frame) and seed,
    over the events both trackers can be judged on: matched before the gap."""
    columns = {}
    for seed in seeds:
        events = results.scores[(tracker, seed)].events
        events = events[events["occlusion"]]
        index = pd.MultiIndex.from_frame(events[["video", "gt_id", "first_hidden"]])
        columns[seed] = pd.Series((events["outcome"] == "recovered").astype(float).to_numpy(), index=index)
        columns[seed][events["outcome"].eq("never_matched").to_numpy()] = float("nan")
    return pd.DataFrame(columns)
