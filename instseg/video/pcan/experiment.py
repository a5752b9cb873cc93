"""Notebook 05's experiment, run as one function: the frozen detector cached once over train and
val, every trained PCAN row per seed, the test-time, inference-only and refine-retrained rows on
the default runs, the two baselines of notebook 04 on the very same detections, every row scored
by every video metric.

Rows (``PCANResults.runs["row"]``) and what kind of evidence each is (``kind``):
- ``trained``: a full clip training per seed (``setup.trained``: the default ``pcan``, its
  capacity twin ``length_1`` (memory of the current frame only), FPN levels, attention types);
- ``test-time``: a trained model evaluated with another memory length (``pcan@8``: the default
  runs with 8 frames); the prototypical module has no parameter that depends on the length;
- ``inference``: the default runs with another eq. 5.8 momentum (Table 5.7), or the released
  code's untrained frame-level bank on the ``length_1`` runs (``length_1+bank``);
- ``refine``: the instance level retrained alone on the default runs' frozen ROI features
  (``protos_<fg>_<bg>``, ``bilayer``; see ``refine_training``);
- ``baseline``: notebook 04's mask-IoU tracker and QDTrack-style heads (``runs/trackers``).

Why the trained rows run in worker processes: a training step is many small ops, and two
single-threaded processes train 1.4x faster than one process on two threads (measured on these
2-core machines); results then depend on the thread count only through float summation order.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torchvision.models.detection.transform import resize_boxes

from instseg.data.dvc_hash import file_md5
from instseg.engine.checkpoint import weights_digest
from instseg.engine.runs import load_run
from instseg.errors import InputError
from instseg.video.data.kitti_mots import read_mots_dir
from instseg.video.data.ytvis import load_ytvis_gt
from instseg.video.layers.frame_attention import RunningPrototypeBank
from instseg.video.models.inference import FrameDetections, embedding_pooler
from instseg.video.models.trackers.base import config_from_dict
from instseg.video.models.trackers.quasi_dense import QuasiDenseConfig
from instseg.video.pcan.cache import CachedVideo, cache_videos
from instseg.video.pcan.model import LEVELS, PCAN, PCANConfig
from instseg.video.pcan.refine_training import RefineTraining, frozen_rois, refine_variant, train_refine
from instseg.video.pcan.runs import load_pcan_run, save_pcan_run
from instseg.video.pcan.tracking import track_pcan_variants
from instseg.video.pcan.training import PCANTraining, train_pcan
from instseg.video.tracking.baselines import TrackingSetup
from instseg.video.tracking.detection_cache import VideoFrames
from instseg.video.tracking.evaluate import TrackingScores, evaluate_tracking, track_videos
from instseg.video.tracking.runs import build_tracker, load_tracker_run


@dataclass(frozen=True)
class PCANSetup:
    """params.yaml ``video.scales.<s>.pcan``."""

    model: dict[str, Any] = field(default_factory=dict)  # PCANConfig over its defaults: the ``pcan`` row
    training: PCANTraining = field(default_factory=PCANTraining)
    trained: dict[str, dict[str, Any]] = field(default_factory=lambda: {"pcan": {}, "length_1": {"memory_length": 1}})
    test_lengths: tuple[int, ...] = (1, 2, 8, 16, 32)  # the default runs at other memory lengths
    attention_lengths: tuple[int, ...] = (2, 8)  # trained non-prototypical rows at other lengths
    momenta: dict[str, float] = field(default_factory=lambda: {"no_propagation": 1.0, "initial": 0.0,
                                                               "momentum_0.5": 0.5})
    prototype_numbers: tuple[tuple[int, int], ...] = ((0, 0), (1, 0), (0, 1), (1, 1), (5, 5), (10, 10), (30, 30))
    bilayer: bool = True
    refine: RefineTraining = field(default_factory=RefineTraining)
    # The bilayer head's schedule over ``refine`` (e.g. more iterations): it learns BCNet's occluder
    # branch from scratch under four loss terms, and is compared with its twin at both plateaus.
    bilayer_refine: dict[str, Any] = field(default_factory=dict)
    bank_levels: tuple[str, ...] = ("p2", "p3")  # the released code's test-time bank
    val_loss_videos: int = 8
    workers: int = 2

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PCANSetup:
        values = dict(values)
        if "training" in values:
            values["training"] = PCANTraining.from_dict(values["training"])
        if "refine" in values:
            values["refine"] = RefineTraining.from_dict(values["refine"])
        for key in ("test_lengths", "attention_lengths", "bank_levels"):
            if key in values:
                values[key] = tuple(values[key])
        if "prototype_numbers" in values:
            values["prototype_numbers"] = tuple(tuple(p) for p in values["prototype_numbers"])
        setup = config_from_dict(cls, values, "pcan")
        if "pcan" not in setup.trained:
            raise InputError("pcan.trained must hold the default row 'pcan'", record="pcan.trained")
        setup.refine_training("bilayer")  # an unknown key fails here, not after the clip trainings
        return setup

    def refine_training(self, row: str) -> RefineTraining:
        """The schedule of refine row ``row``: ``refine``, with ``bilayer_refine`` over it for the bilayer head."""
        if row != "bilayer" or not self.bilayer_refine:
            return self.refine
        return RefineTraining.from_dict({**asdict(self.refine), **self.bilayer_refine})

    def config(self, row: str) -> PCANConfig:
        return PCANConfig.from_dict({**self.model, **self.trained[row]})


@dataclass
class PCANResults:
    """Per (row, seed): the scores; ``runs``: one row per (row, seed) with ``kind`` and every
    summary metric; ``training``: one row per training (clips or refine head); ``models``: the
    default ``pcan`` models by (row, seed), for the figures; ``val``: the cached val videos."""

    scores: dict[tuple[str, int], TrackingScores]
    runs: pd.DataFrame
    training: pd.DataFrame
    seconds: dict[str, float]
    models: dict[tuple[str, int], PCAN]
    val: list[CachedVideo]


def baseline_frames(detector: torch.nn.Module, videos: Sequence[CachedVideo]) -> list[VideoFrames]:
    """The cached detections with notebook 04's ROI features (the detector's own 7x7 pooler on the
    cached maps), so its trackers link exactly the detections PCAN links."""
    pooler = embedding_pooler(detector)
    out = []
    with torch.no_grad():
        for video in videos:
            frames = []
            for frame in video.frames:
                det = frame.detections
                boxes = det.boxes
                if frame.feature_size != video.size:
                    boxes = resize_boxes(boxes, list(video.size), list(frame.feature_size))
                levels = {k: v[None].float() for k, v in frame.levels.items()}
                features = pooler(levels, [boxes], [frame.feature_size]).half()
                frames.append(FrameDetections(det.boxes, det.scores, det.labels, det.masks, features))
            out.append(VideoFrames(video.video_id, video.name, frames))
    return out


_LOADED: dict[str, Any] = {}  # per process: cached videos, ground truth (read once)


def _loaded(key: str, load: Any) -> Any:
    if key not in _LOADED:
        _LOADED[key] = load()
    return _LOADED[key]


@dataclass(frozen=True)
class _Inputs:
    """What a row job reads, by path (a worker process loads each once)."""

    train: str
    val: str
    data_root: str
    split: str
    out_dir: str
    detector_run: str
    trackers: str  # notebook 04's tracker runs (quasi_dense_s<seed>)
    digests: tuple[tuple[str, str], ...] = ()  # of what the cached features come from: a run trained on others retrains


def _training_row(row: str, seed: int, stage: str, run: Any) -> dict[str, Any]:
    return {"row": row, "seed": seed, "stage": stage, "seconds": run.seconds, "plateau_passed": run.plateau.passed,
            "tail_improvement": run.plateau.improvement, "phase_improvement": run.plateau.phase_improvement,
            **run.final_loss}


def _at_length(model: PCAN, length: int) -> PCAN:
    """``model`` read with another memory length (same weights)."""
    out = PCAN(replace(model.config, memory_length=length), model.channels)
    out.load_state_dict(model.state_dict())
    return out.eval()


def _row_job(setup: PCANSetup, tracking: TrackingSetup, row: str, seed: int, inputs: _Inputs, resume: bool,
             threads: int | None = None) -> dict[str, Any]:
    """Train ``row`` for ``seed`` and score it with every row evaluated on it: for ``pcan`` the
    inference and refine variants (one linking pass) and the test-time lengths; for a
    non-prototypical attention its other lengths; for ``length_1`` the released bank."""
    if threads:
        torch.set_num_threads(threads)
    train = _loaded(inputs.train, lambda: torch.load(inputs.train, weights_only=False))
    val = _loaded(inputs.val, lambda: torch.load(inputs.val, weights_only=False))
    root = Path(inputs.data_root)
    gt = _loaded(f"gt:{root}:{inputs.split}", lambda: load_ytvis_gt(root / "annotations" / f"{inputs.split}.json"))
    gt_mots = _loaded(f"mots:{root}:{inputs.split}", lambda: read_mots_dir(root / "mots" / inputs.split))
    out_dir, qd = Path(inputs.out_dir), QuasiDenseConfig.from_dict(dict(tracking.quasi_dense))
    val_loss = val[:setup.val_loss_videos]
    scores: dict[str, tuple[str, TrackingScores]] = {}

    def score(model: PCAN, rows: Mapping[str, tuple[str, PCAN, float]],
              banks: Mapping[str, RunningPrototypeBank] | None = None) -> None:
        """One linking pass of ``model``; per row (name -> kind, refiner, momentum) its scores."""
        variants = {name: (refiner, momentum) for name, (_, refiner, momentum) in rows.items()}
        for name, tracked in track_pcan_variants(model, val, variants, qd, banks).items():
            scores[name] = (rows[name][0], evaluate_tracking(gt, tracked, gt_mots, tracking.min_gap, tracking.grace))

    def alone(name: str, kind: str, model: PCAN) -> dict[str, tuple[str, PCAN, float]]:
        return {name: (kind, model, model.config.momentum)}

    embed_init = (load_tracker_run(Path(inputs.trackers) / f"quasi_dense_s{seed}").embed_head
                  if setup.training.init_embedding else None)
    inputs_digest = dict(inputs.digests)
    run = train_pcan(setup.config(row), setup.training, train, val_loss, seed, out_dir=out_dir / f"{row}_s{seed}",
                     resume=resume, embed_init=embed_init, inputs=inputs_digest)
    save_pcan_run(out_dir / f"{row}_s{seed}", run.model, inputs.detector_run, dict(tracking.quasi_dense))
    training = [_training_row(row, seed, "clips", run)]
    model = run.model
    if row == "pcan":
        rows = alone("pcan", "trained", model) | {name: ("inference", model, m) for name, m in setup.momenta.items()}
        changes = {f"protos_{fg}_{bg}": {"fg_prototypes": fg, "bg_prototypes": bg} for fg, bg in setup.prototype_numbers}
        if setup.bilayer:
            changes["bilayer"] = {"refine": "bilayer"}
        if changes:
            rois = frozen_rois(model, train), frozen_rois(model, val_loss)
            base = inputs_digest | {"base_model": weights_digest(model.state_dict())}
            for name, change in changes.items():
                refined = train_refine(refine_variant(model, seed, **change), setup.refine_training(name), *rois,
                                       seed, out_dir=out_dir / f"{name}_s{seed}", resume=resume,
                                       settings=base | {"variant": change})
                save_pcan_run(out_dir / f"{name}_s{seed}", refined.model, inputs.detector_run, dict(tracking.quasi_dense))
                training.append(_training_row(name, seed, "refine", refined))
                rows |= alone(name, "refine", refined.model)
        score(model, rows)
        for length in setup.test_lengths:
            if length != model.config.memory_length:  # the refiner is the model itself: only the memory differs
                score(_at_length(model, length), {f"pcan@{length}": ("test-time", model, model.config.momentum)})
        return {"training": training, "scores": scores}
    score(model, alone(row, "trained", model))
    if model.config.attention != "prototypical" and model.config.memory_length > 1:
        for length in setup.attention_lengths:
            if length != model.config.memory_length:
                longer = _at_length(model, length)
                score(longer, alone(f"{row}@{length}", "test-time", longer))
    if row == "length_1" and setup.bank_levels:
        banks = {LEVELS[lv]: RunningPrototypeBank() for lv in setup.bank_levels}
        score(model, alone("length_1+bank", "inference", model), banks)
    return {"training": training, "scores": scores}


def run_pcan_experiment(setup: PCANSetup, tracking: TrackingSetup, data_root: str | Path, runs_root: str | Path,
                        out_dir: str | Path | None = None, trackers_dir: str | Path | None = None,
                        split: str = "val", resume: bool = True) -> PCANResults:
    """Everything notebook 05 reports (see the module docstring); runs under ``out_dir``
    (default ``runs_root/pcan``), each a run directory ``instseg track --checkpoint`` reads.
    Notebook 04's tracker runs are read from ``trackers_dir`` (default ``runs_root/trackers``).
    Rows train and are scored in ``setup.workers`` processes (one thread each), longest first."""
    root, runs_root = Path(data_root), Path(runs_root)
    out_dir = Path(out_dir) if out_dir is not None else runs_root / "pcan"
    detector_run = runs_root / tracking.detector
    trackers = Path(trackers_dir) if trackers_dir is not None else runs_root / "trackers"
    if missing := [s for s in tracking.seeds if not (trackers / f"quasi_dense_s{s}").is_dir()]:
        raise InputError(f"no QDTrack-style tracker runs for seeds {missing}: notebook 04 trains them "
                         "(dvc repro nb04_video_benchmark)", trackers)
    detector, spec = load_run(detector_run)
    l2c = spec.label_to_category_id
    gt = {s: load_ytvis_gt(root / "annotations" / f"{s}.json") for s in ("train", split)}
    gt_mots = read_mots_dir(root / "mots" / split)
    seeds = list(tracking.seeds)
    seconds: dict[str, float] = {}
    scores: dict[tuple[str, int], TrackingScores] = {}
    kinds: dict[str, str] = {}

    tic = time.perf_counter()
    train = cache_videos(detector, l2c, gt["train"], root / "frames", training=True, batch_size=tracking.batch_size)
    val_ids = sorted(v["id"] for v in gt[split]["videos"])  # the validation-loss videos need training ROIs
    val = cache_videos(detector, l2c, gt[split], root / "frames", val_ids[:setup.val_loss_videos], training=True,
                       batch_size=tracking.batch_size) + \
        cache_videos(detector, l2c, gt[split], root / "frames", val_ids[setup.val_loss_videos:],
                     batch_size=tracking.batch_size)
    seconds["cache"] = time.perf_counter() - tic

    tic = time.perf_counter()
    frames = baseline_frames(detector, val)
    iou = evaluate_tracking(gt[split], track_videos(frames, build_tracker("mask_iou", tracking.mask_iou)), gt_mots,
                            tracking.min_gap, tracking.grace)
    for seed in seeds:  # no trained part: one run, the same in every seed column
        scores[("mask_iou", seed)] = iou
        head = load_tracker_run(trackers / f"quasi_dense_s{seed}")
        scores[("quasi_dense", seed)] = evaluate_tracking(gt[split], track_videos(frames, head.tracker, head.embed_head),
                                                          gt_mots, tracking.min_gap, tracking.grace)
    kinds |= {"mask_iou": "baseline", "quasi_dense": "baseline"}
    seconds["baselines"] = time.perf_counter() - tic

    tic = time.perf_counter()
    # Longest first, so that no worker idles at the end while another runs a long job: pcan (with
    # its refine retrainings), then the attention baselines (cpu: ~120 s and ~80 s a job, ~70 s the rest)
    jobs = [(row, seed) for row in setup.trained for seed in seeds]
    jobs.sort(key=lambda job: (job[0] != "pcan", setup.config(job[0]).attention == "prototypical"))
    results = []
    with tempfile.TemporaryDirectory(prefix="pcan_cache_") as tmp:
        digests = (("detector", weights_digest(detector.state_dict())),
                   *((f"{s}.json", file_md5(root / "annotations" / f"{s}.json")) for s in ("train", split)))
        inputs = _Inputs(os.path.join(tmp, "train.pt"), os.path.join(tmp, "val.pt"), str(root), split, str(out_dir),
                         str(detector_run), str(trackers), digests)
        if setup.workers > 1:
            torch.save(train, inputs.train)
            torch.save(val, inputs.val)
            with ProcessPoolExecutor(setup.workers, mp_context=get_context("spawn")) as pool:
                futures = [pool.submit(_row_job, setup, tracking, row, seed, inputs, resume, 1) for row, seed in jobs]
                results = [future.result() for future in futures]
        else:
            _LOADED[inputs.train], _LOADED[inputs.val] = train, val
            try:
                results = [_row_job(setup, tracking, row, seed, inputs, resume) for row, seed in jobs]
            finally:
                _LOADED.pop(inputs.train), _LOADED.pop(inputs.val)
    seconds["rows"] = time.perf_counter() - tic
    for (_, seed), result in zip(jobs, results):
        for name, (kind, s) in result["scores"].items():
            scores[(name, seed)], kinds[name] = s, kind
    models = {("pcan", seed): load_pcan_run(out_dir / f"pcan_s{seed}").model for seed in seeds}
    runs = pd.DataFrame([{"row": row, "seed": seed, "kind": kinds[row], **s.summary}
                         for (row, seed), s in scores.items()])
    training = pd.DataFrame([r for result in results for r in result["training"]])
    return PCANResults(scores, runs, training, seconds, models, val)
