"""Notebook 07's experiment: VOIN's Table 5.8 and the studies around it, on OccludedShapes-VIS.

Everything is trained and scored per seed (``VoinSetup.seeds``), in ``workers`` processes of one
thread each, three phases:

1. per seed: **shape completion** (scored per val clip: amodal and invisible IoU, beside the
   visible-mask and convex-hull baselines) and **flow completion** (EPE against the exact flow,
   beside DIS alone; the seed's flow net then completes the flows every flow-using row of that seed
   propagates along); once: the **classical rows** (TELEA alone, DFVI-like and FGVC-like on DIS,
   DFVI-like on the exact flow as an oracle);
2. per row and seed: a **GAN training** (:mod:`inpaint_training`) and its score on every val sample;
3. per seed: the **robustness curve** (VOIN and DFVI-like given holes dilated by 0..14 px and gross
   mask errors, :mod:`mask_errors`) and, with a tracker run, **end-to-end de-occlusion** from the
   tracker's predicted masks (:mod:`tracked_masks`) through the seed's shape model.

Every learned row reads the same samples, crops, schedule and budget; what differs is the row's
setting (the generator's gating, the flow-propagated input, the discriminators) or, for STTN-like, the
generator. Scores (:mod:`scoring`) are per sample, so every comparison is paired over samples and seeds.

Runs persist under ``out_dir``: each finished job leaves ``result.json`` (and its models' weights)
and is not rerun while its settings are unchanged; an interrupted training resumes from its engine
checkpoint; a job whose settings changed starts afresh in an emptied folder (:func:`start_job`).
``out_dir/voin_s<seed>`` is a VOIN run (generator, shape and flow models, assembled after phase 2) that
``instseg inpaint --checkpoint`` reads.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn

from instseg.engine.checkpoint import atomic_save, atomic_write
from instseg.errors import InputError
from instseg.evaluation.inpainting import SSIM_WIN_SIZE
from instseg.evaluation.lpips import LPIPS
from instseg.video.data.occluded_shapes_vis.build import load_scenes
from instseg.video.voin.baseline_eval import hole_epe
from instseg.video.voin.classical import cv2_inpaint_only, dfvi_like
from instseg.video.voin.edge_flow import edge_guided_flows
from instseg.video.voin.data import VoiConfig, VoiSample, build_voi_split, iter_samples
from instseg.video.voin.flow import (FlowClip, FlowCompletionConfig, FlowCompletionNet, complete_clip_flows,
                                     train_flow_completion)
from instseg.video.voin.flow_targets import initial_flows, sample_flows
from instseg.video.voin.generator import GeneratorConfig
from instseg.video.voin.inpaint_data import InpaintCrop, crop_sample, propagate_sample, sample_name, track_key
from instseg.video.voin.inpaint_gan import InpaintRow, InpaintTraining, voin_generator
from instseg.video.voin.inpaint_training import category_labels, inpaint_clip, table_rows, train_inpainter
from instseg.video.voin.losses import LossWeights
from instseg.video.voin.mask_errors import GROSS_ERRORS
from instseg.video.voin.params import voin_config
from instseg.video.voin.pipeline import InpaintConfig
from instseg.video.voin.runs import save_voin_run
from instseg.video.voin.scoring import clean_warping_error, score_inpainting
from instseg.video.voin.shape import ShapeCompletion, ShapeConfig
from instseg.video.voin.shape_metrics import ShapeScores, shape_scores
from instseg.video.voin.shape_baselines import convex_hull_baseline, visible_baseline
from instseg.video.voin.shape_training import ShapeTraining, clip_from_sample, predict_clips, track_categories, \
    train_shape
from instseg.video.voin.sttn import STTNConfig, STTNInpainter

SPLITS = ("train", "val")
KEY_FILE = "job.key"  # the fingerprint a job folder was started under
DIVERGED_RISE = 0.1
CLASSICAL = ("telea", "dfvi_like", "fgvc_like", "dfvi_like_exact")


@dataclass(frozen=True)
class VoinSetup:
    """params.yaml ``video.scales.<scale>.voin`` (defaults: the cpu scale)."""

    voi: VoiConfig = field(default_factory=VoiConfig)
    voi_seed: int = 0
    max_videos: int | None = None  # per split (smoke)
    seeds: tuple[int, ...] = (0, 1, 2)
    shape_training: ShapeTraining = field(default_factory=ShapeTraining)
    shape_model: ShapeConfig = field(default_factory=ShapeConfig)
    flow: FlowCompletionConfig = field(default_factory=FlowCompletionConfig)
    inpaint: InpaintTraining = field(default_factory=InpaintTraining)
    generator: GeneratorConfig = field(default_factory=lambda: GeneratorConfig(channels=8))
    weights: LossWeights = field(default_factory=LossWeights)
    sttn: STTNConfig = field(default_factory=lambda: STTNConfig(channels=8))
    sttn_lr: float | None = None  # STTN-like's own rate (None: inpaint.lr); its attention diverges at VOIN's
    rows: tuple[str, ...] = ("voin", "voin_no_flow", "no_gating", "no_stam", "lgtsm", "sttn")
    eval_samples: int | None = None  # val samples every row is scored on (evenly spread; None: all)
    study_samples: int = 24  # val samples of the robustness and end-to-end studies
    dilations: tuple[int, ...] = (0, 4, 8, 14)
    gross_errors: tuple[str, ...] = ("shift", "drop")
    tracker: str | None = "frcnn"  # a tracker or detector run under the runs folder (None: no end-to-end study)
    tracker_config: Mapping[str, Any] = field(default_factory=dict)  # overrides of the run's tracker settings
    ssim_window: int = SSIM_WIN_SIZE  # the published 65; smaller only where frames are (smoke)
    workers: int = 2

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> VoinSetup:
        values = dict(values)
        nested: dict[str, Callable[[Any], Any]] = {
            "voi": VoiConfig.from_dict, "shape_training": ShapeTraining.from_dict, "shape_model": ShapeConfig.from_dict,
            "flow": FlowCompletionConfig.from_dict, "inpaint": InpaintTraining.from_dict,
            "generator": GeneratorConfig.from_dict, "weights": LossWeights.from_dict, "sttn": STTNConfig.from_dict}
        for key, build in nested.items():
            if key in values:
                values[key] = build(dict(values[key] or {}))
        return voin_config(cls, values, "video.voin")

    def check(self) -> None:
        known = set(table_rows()) | {"sttn"}
        if unknown := [r for r in self.rows if r not in known]:
            raise InputError(f"unknown rows {unknown}; known: {sorted(known)}", record="video.voin.rows")
        if not self.seeds or self.workers < 1 or self.study_samples < 1 or any(d < 0 for d in self.dilations):
            raise InputError("need seeds, workers >= 1, study_samples >= 1 and dilations >= 0", record="video.voin")
        if 0 not in self.dilations:
            raise InputError("the robustness study needs dilation 0 (the true masks) as its reference",
                             record="video.voin.dilations")
        if unknown := [g for g in self.gross_errors if g not in GROSS_ERRORS]:
            raise InputError(f"unknown gross errors {unknown}; known: {list(GROSS_ERRORS)}",
                             record="video.voin.gross_errors")

    def row(self, name: str) -> InpaintRow:
        """The row's settings; STTN-like trains like LGTSM-like (T-PatchGAN, no flow), its own generator."""
        rows = table_rows(self.generator, self.weights)
        return rows["lgtsm"] if name == "sttn" else rows[name]

    def training(self, name: str) -> InpaintTraining:
        """The row's training settings: ``inpaint``, at ``sttn_lr`` for STTN-like when it is set."""
        return replace(self.inpaint, lr=self.sttn_lr) if name == "sttn" and self.sttn_lr else self.inpaint

    def factory(self, name: str) -> Callable[[InpaintRow], nn.Module] | None:
        return (lambda _row: STTNInpainter(self.sttn)) if name == "sttn" else None

    def uses_flow(self, name: str) -> bool:
        return self.row(name).use_propagated


# ----------------------------------------------------------------------------------- bookkeeping


def fingerprint(*parts: Any) -> str:
    """A short hash of a job's settings: a finished job is reused only under the same one."""
    text = json.dumps([asdict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts], sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def finished_result(job_dir: Path, key: str) -> dict[str, Any] | None:
    path = job_dir / "result.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return None
    return data if data.get("fingerprint") == key else None


def start_job(job_dir: Path, key: str, needs: Sequence[Path] = ()) -> dict[str, Any] | None:
    """The job's finished result under ``key`` (with every file of ``needs``), else None and the folder
    ready to run: kept when it was started under the same key (an interrupted training resumes from
    its checkpoint), emptied when under another or none (its checkpoints belong to other settings)."""
    done = finished_result(job_dir, key)
    if done is not None and all(Path(p).is_file() for p in needs):
        return done
    marker = job_dir / KEY_FILE
    if job_dir.exists() and (not marker.is_file() or marker.read_text().strip() != key):
        shutil.rmtree(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(key)
    return None


def finish_job(job_dir: Path, key: str, result: dict[str, Any]) -> dict[str, Any]:
    result = {"fingerprint": key, **result}
    atomic_write(job_dir / "result.json", lambda f: f.write(json.dumps(result, default=float).encode()))
    return result


def _training(run: Any) -> dict[str, Any]:
    p = run.plateau
    return {"seconds": run.seconds, "plateau_passed": bool(p.passed), "tail_improvement": p.improvement,
            "phase_improvement": p.phase_improvement, "plateau": p.as_dict(), "val_curve": run.val_curve}


@dataclass(frozen=True)
class RunPaths:
    data_root: str
    voi_root: str
    out_dir: str
    runs_root: str


_LOADED: dict[str, Any] = {}  # per process


def _once(key: str, load: Callable[[], Any]) -> Any:
    if key not in _LOADED:
        _LOADED[key] = load()
    return _LOADED[key]


def annotations_path(paths: RunPaths, split: str) -> Path:
    return Path(paths.data_root) / "annotations" / f"{split}.json"


def _samples(paths: RunPaths, split: str) -> list[VoiSample]:
    index = Path(paths.voi_root) / split / "index.json"
    return _once(f"samples:{index}", lambda: [s for _, s in iter_samples(index)])


def _scenes(paths: RunPaths, split: str) -> dict[int, dict]:
    return _once(f"scenes:{split}", lambda: load_scenes(annotations_path(paths, split)))


def spread(count: int | None, total: int) -> list[int]:
    """``count`` indices spread evenly over ``total`` (all of them for None)."""
    if count is None or count >= total:
        return list(range(total))
    return [int(i) for i in np.unique(np.linspace(0, total - 1, count).round().astype(int))]


def eval_set(setup: VoinSetup, paths: RunPaths, study: bool = False) -> list[VoiSample]:
    val = _samples(paths, "val")
    picks = spread(setup.eval_samples, len(val))
    if study:
        picks = [picks[i] for i in spread(setup.study_samples, len(picks))]
    return [val[i] for i in picks]


def _exact(paths: RunPaths, sample: VoiSample) -> dict[str, np.ndarray]:
    """A val sample's exact clean-scene flows (both directions)."""
    return _once(f"exact:{sample_name(sample)}", lambda: sample_flows(sample, _scenes(paths, "val")))


def _lpips() -> LPIPS:
    return _once("lpips", LPIPS)


def _labels(paths: RunPaths, split: str = "train") -> tuple[dict[tuple[int, int], int], int]:
    """``{(video, track): label}`` of a split and the number of classes (the multi-class discriminator's)."""
    return _once(f"labels:{split}", lambda: category_labels(annotations_path(paths, split)))


def _label(paths: RunPaths, split: str, sample: VoiSample) -> int:
    return _labels(paths, split)[0][track_key(sample)]


def score_method(setup: VoinSetup, paths: RunPaths, method: str, pred: np.ndarray, sample: VoiSample,
                 hole: np.ndarray | None = None, **extra: Any) -> dict[str, Any]:
    return {"method": method, "sample": sample_name(sample), "kind": sample.meta.get("kind"),
            **score_inpainting(pred, sample, _exact(paths, sample)["forward"], _lpips(), hole, setup.ssim_window),
            **extra}


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)


# ----------------------------------------------------------------------------------------- splits


def build_splits(setup: VoinSetup, data_root: str | Path, voi_root: str | Path) -> dict[str, dict[str, Any]]:
    """The VOI train/val splits under ``voi_root`` (rebuilt only when their settings changed): each
    split's build statistics."""
    stats = {}
    for split in SPLITS:
        folder = Path(voi_root) / split
        key = fingerprint(setup.voi, setup.voi_seed, setup.max_videos)
        if (done := finished_result(folder, key)) is not None and (folder / "index.json").is_file():
            stats[split] = done["stats"]
            continue
        built = build_voi_split(Path(data_root) / "annotations" / f"{split}.json", voi_root, split, setup.voi,
                                setup.voi_seed, setup.max_videos)
        stats[split] = finish_job(folder, key, {"stats": built})["stats"]
    return stats


# ----------------------------------------------------------------------------------------- phase 1


def _shape_clips(paths: RunPaths, split: str) -> list:
    def load() -> list:
        categories = track_categories(annotations_path(paths, split))
        return [clip_from_sample(s, categories[track_key(s)], sample_name(s)) for s in _samples(paths, split)]
    return _once(f"shape_clips:{split}", load)


def _shape_job(setup: VoinSetup, seed: int, paths: RunPaths, threads: int | None = None) -> dict[str, Any]:
    """Train the seed's shape model; per val clip its IoUs (and, for seed 0's job, the baselines')."""
    set_threads(threads)
    job_dir = Path(paths.out_dir) / f"shape_s{seed}"
    key = fingerprint(setup.shape_training, setup.shape_model, setup.voi, setup.max_videos, seed)
    if (done := start_job(job_dir, key)) is not None:
        return done
    train, val = _shape_clips(paths, "train"), _shape_clips(paths, "val")
    run = train_shape(setup.shape_training, setup.shape_model, train, val, seed, out_dir=job_dir, resume=True)
    atomic_save(run.model.state_dict(), job_dir / "shape.pt")
    # the visible part always counts as amodal (as the inference pipeline reads the prediction)
    preds = {"shape_model": [p | c.visible for p, c in zip(predict_clips(run.model, val, setup.shape_training), val)]}
    if seed == setup.seeds[0]:
        preds |= {"visible": [visible_baseline(c.visible, c.name) for c in val],
                  "convex_hull": [convex_hull_baseline(c.visible, c.name) for c in val]}
    rows = []
    for method, masks in preds.items():
        for pred, clip in zip(masks, val):
            s = shape_scores(pred, clip.amodal, clip.visible, clip.occluded, clip.name)
            rows.append({"method": method, "sample": clip.name, **_shape_row(s)})
    return finish_job(job_dir, key, {"training": _training(run), "scores": rows})


def _shape_row(scores: ShapeScores) -> dict[str, float]:
    """A clip's IoUs and the sums that pool them over clips (:func:`~shape_metrics.pool_scores`'s)."""
    keep = scores.occluded_frames
    return {"iou": scores.video_iou, "invisible_iou": scores.video_invisible_iou,
            "inter": float(scores.inter.sum()), "union": float(scores.union.sum()),
            "invisible_inter": float(scores.invisible_inter[keep].sum()),
            "invisible_union": float(scores.invisible_union[keep].sum())}


def _flow_clips(paths: RunPaths, split: str) -> list[FlowClip]:
    return _once(f"flow_clips:{split}", lambda: [FlowClip(s, initial_flows(s.corrupted),
                                                          sample_flows(s, _scenes(paths, split)))
                                                 for s in _samples(paths, split)])


def _epe_sums(flows: Mapping[str, np.ndarray], exact: Mapping[str, np.ndarray], sample: VoiSample
              ) -> dict[str, float]:
    """Summed end-point errors and pixel counts over the object and its occluded part (source frames)."""
    out = {}
    for region, masks in (("object", sample.amodal), ("occluded", sample.occluded)):
        src = {"forward": masks[:-1], "backward": masks[1:]}
        err = [np.linalg.norm(flows[d] - exact[d], axis=-1)[src[d]] for d in src]
        out[f"{region}_sum"], out[f"{region}_px"] = float(sum(e.sum() for e in err)), float(sum(e.size for e in err))
    return out


def _flow_job(setup: VoinSetup, seed: int, paths: RunPaths, threads: int | None = None) -> dict[str, Any]:
    """Train the seed's flow net; its EPE and DIS's per val sample (hole EPE, and the sums that pool
    over the object and the occluded part); then the propagated crops of both splits along the net's
    completed flows (each clip's flows completed once), which this seed's flow-using rows read."""
    set_threads(threads)
    job_dir = Path(paths.out_dir) / f"flow_s{seed}"
    cfg = replace(setup.flow, seed=seed)
    key = fingerprint(cfg, setup.voi, setup.max_videos, setup.inpaint.crop)
    if (done := start_job(job_dir, key, [_crops_path(paths, sp, seed) for sp in SPLITS])) is not None:
        return done
    train, val = _flow_clips(paths, "train"), _flow_clips(paths, "val")
    run = train_flow_completion(cfg, train, val, out_dir=job_dir, resume=True)
    atomic_save(run.model.state_dict(), job_dir / "flow.pt")
    rows = []
    for split, clips in (("train", train), ("val", val)):
        crops = []
        for clip in clips:
            s = clip.sample
            completed = complete_clip_flows(run.model, s.corrupted, s.visible, s.amodal, clip.init)
            if split == "val":
                rows.append({"sample": sample_name(s), "kind": s.meta.get("kind"),
                             "flow_net": hole_epe(completed, clip.exact, s.occluded),
                             "dis": hole_epe(clip.init, clip.exact, s.occluded),
                             **{f"flow_net_{k}": v for k, v in _epe_sums(completed, clip.exact, s).items()},
                             **{f"dis_{k}": v for k, v in _epe_sums(clip.init, clip.exact, s).items()}})
            crops.append(crop_sample(s, setup.inpaint.crop, _label(paths, split, s), propagate_sample(s, completed)))
        atomic_write(_crops_path(paths, split, seed), lambda f, c=crops: pickle.dump(c, f))
    return finish_job(job_dir, key, {"training": _training(run), "scores": rows})


def _classical_job(setup: VoinSetup, paths: RunPaths, part: int = 0, parts: int = 1, threads: int | None = None
                   ) -> dict[str, Any]:
    """TELEA, DFVI-like and FGVC-like on DIS, DFVI-like on the exact flow, per eval sample of part
    ``part`` of ``parts`` (every ``parts``-th sample: the longest job of phase 1, split over the workers)."""
    set_threads(threads)
    job_dir = Path(paths.out_dir) / "classical" / f"part{part}of{parts}"
    key = fingerprint(setup.voi, setup.max_videos, setup.eval_samples, part, parts)
    if (done := start_job(job_dir, key)) is not None:
        return done
    rows = []
    for s in eval_set(setup, paths)[part::parts]:
        name, dis, exact = sample_name(s), initial_flows(s.corrupted), _exact(paths, s)
        args = (s.corrupted, s.visible, s.occluded, s.amodal)
        rows.append(score_method(setup, paths, "telea", cv2_inpaint_only(*args, record=name), s))
        rows.append(score_method(setup, paths, "dfvi_like", dfvi_like(*args, dis, record=name), s,
                                 epe=hole_epe(dis, exact, s.occluded)))
        edge = edge_guided_flows(dis, s.occluded, s.amodal, record=name)
        rows.append(score_method(setup, paths, "fgvc_like", dfvi_like(*args, edge, record=name), s,
                                 epe=hole_epe(edge, exact, s.occluded)))
        rows.append(score_method(setup, paths, "dfvi_like_exact", dfvi_like(*args, exact, record=name), s))
        rows.append({"method": "clean", "sample": name, "kind": s.meta.get("kind"),
                     "ewarp": clean_warping_error(s, exact["forward"])})
    return finish_job(job_dir, key, {"scores": rows})


# ----------------------------------------------------------------------------------------- phase 2


def _crops_path(paths: RunPaths, split: str, seed: int) -> Path:
    return Path(paths.out_dir) / f"flow_s{seed}" / f"crops_{split}.pkl"


def _crops(setup: VoinSetup, paths: RunPaths, split: str, seed: int | None) -> list[InpaintCrop]:
    """The split's crops: plain, or (``seed``) with the propagated input along that seed's flow net,
    as its flow job wrote them."""
    def load() -> list[InpaintCrop]:
        if seed is None:
            return [crop_sample(s, setup.inpaint.crop, _label(paths, split, s)) for s in _samples(paths, split)]
        with open(_crops_path(paths, split, seed), "rb") as fh:
            return pickle.load(fh)
    return _once(f"crops:{split}:{seed}", load)


def _inpaint_job(setup: VoinSetup, row_name: str, seed: int, paths: RunPaths, threads: int | None = None
                 ) -> dict[str, Any]:
    """Train one row for one seed and score it on every eval sample."""
    set_threads(threads)
    job_dir = Path(paths.out_dir) / f"{row_name}_s{seed}"
    row, uses_flow = setup.row(row_name), setup.uses_flow(row_name)
    key = fingerprint(row.to_dict(), setup.training(row_name), setup.sttn if row_name == "sttn" else None, setup.voi,
                      setup.max_videos, setup.eval_samples, seed, setup.flow if uses_flow else None)
    if (done := start_job(job_dir, key)) is not None:
        return done
    flow_seed = seed if uses_flow else None
    train, val = _crops(setup, paths, "train", flow_seed), _crops(setup, paths, "val", flow_seed)
    factory = setup.factory(row_name)
    run = train_inpainter(row, setup.training(row_name), train, val, _labels(paths)[1], seed, out_dir=job_dir,
                          resume=True,
                          **({"generator": factory} if factory else {}))
    atomic_save(run.model.state_dict(), job_dir / "generator.pt")
    by_name = {c.name: c for c in val}
    rows = [score_method(setup, paths, row_name, inpaint_clip(run.model, s, setup.inpaint.crop,
                                                        cropped=by_name[sample_name(s)]), s)
            for s in eval_set(setup, paths)]
    return finish_job(job_dir, key, {"training": _training(run) | {"sec_per_iter": run.sec_per_iter},
                                  "scores": rows})


# ----------------------------------------------------------------------------------------- results


@dataclass
class VoinResults:
    """Per-sample scores of every method and seed (``scores``: columns method, seed, sample, kind and
    the metrics; classical methods carry every seed with the same values, so pairs need no special
    case), the trainings, the flow and shape scores, the split statistics and the phases' seconds."""

    scores: pd.DataFrame
    training: pd.DataFrame
    flow: pd.DataFrame
    flow_pooled: pd.DataFrame
    shape: pd.DataFrame
    splits: dict[str, dict[str, Any]]
    seconds: dict[str, float]
    curves: dict[tuple[str, str, int], list[tuple[int, float]]]  # (stage, row, seed) -> validation curve
    studies: dict[str, pd.DataFrame] = field(default_factory=dict)


def pool_map(setup: VoinSetup, jobs: Sequence[tuple[Callable[..., dict], tuple]]) -> list[dict[str, Any]]:
    if setup.workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(min(setup.workers, len(jobs)), mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(fn, *args, 1) for fn, args in jobs]
            return [f.result() for f in futures]
    return [fn(*args) for fn, args in jobs]


def training_row(stage: str, row: str, seed: int, training: Mapping[str, Any]) -> dict[str, Any]:
    """One training's row. A run whose validation loss ends more than ``DIVERGED_RISE`` above its first
    point has **diverged** and fails the plateau check however flat its end (a collapsed GAN's loss is
    constant); a flat run that merely wanders, like a flow net that cannot improve on DIS, has not."""
    curve = training["val_curve"]
    diverged = bool(curve) and curve[-1][1] > (1 + DIVERGED_RISE) * curve[0][1]
    out = {"stage": stage, "row": row, "seed": seed, **{k: v for k, v in training.items() if k != "val_curve"},
           "diverged": diverged}
    if diverged:
        out["plateau_passed"] = False
        out["plateau"] = dict(out.get("plateau") or {}, passed=False)
    return out


def run_voin_experiment(setup: VoinSetup, data_root: str | Path, runs_root: str | Path,
                        out_dir: str | Path | None = None, with_studies: bool = False) -> VoinResults:
    """Phases 1-2 of the module docstring, and phase 3 ``with_studies``."""
    setup.check()
    runs_root = Path(runs_root)
    out = Path(out_dir) if out_dir is not None else runs_root / "voin"
    paths = RunPaths(str(Path(data_root)), str(out / "voi"), str(out), str(runs_root))
    seconds: dict[str, float] = {}
    tic = time.perf_counter()
    splits = build_splits(setup, data_root, paths.voi_root)
    seconds["splits"] = time.perf_counter() - tic
    seeds = list(setup.seeds)

    tic = time.perf_counter()
    parts = setup.workers  # the classical rows are the longest job: split, and started first
    phase1 = [(_classical_job, (setup, paths, k, parts)) for k in range(parts)] + \
        [(_flow_job, (setup, s, paths)) for s in seeds] + [(_shape_job, (setup, s, paths)) for s in seeds]
    done1 = pool_map(setup, phase1)
    seconds["shape_flow_classical"] = time.perf_counter() - tic
    classical, flows, shapes = done1[:parts], done1[parts:parts + len(seeds)], done1[parts + len(seeds):]

    tic = time.perf_counter()
    jobs = [(r, s) for s in seeds for r in setup.rows]
    done2 = pool_map(setup, [(_inpaint_job, (setup, r, s, paths)) for r, s in jobs])
    seconds["inpaint"] = time.perf_counter() - tic
    if "voin" in setup.rows:  # assembled anew every time: it holds the seed's current shape and flow models too
        for s in seeds:
            save_voin_run(Path(paths.out_dir) / f"voin_s{s}", load_generator(setup, "voin", s, paths.out_dir),
                          load_shape(setup, s, paths.out_dir), load_flow(setup, s, paths.out_dir),
                          InpaintConfig(setup.shape_training.crop_size, setup.shape_training.context))

    training = [training_row("flow", "flow_net", s, f["training"]) for s, f in zip(seeds, flows)]
    training += [training_row("shape", "shape_model", s, r["training"]) for s, r in zip(seeds, shapes)]
    training += [training_row("inpaint", r, s, d["training"]) for (r, s), d in zip(jobs, done2)]
    flow_rows = [dict(x, seed=s) for s, f in zip(seeds, flows) for x in f["scores"]]
    net_epe = {(x["seed"], x["sample"]): x["flow_net"] for x in flow_rows}  # the flow a flow-using row propagates along
    score_rows = [dict(x, seed=s, **({"epe": net_epe[(s, x["sample"])]} if setup.uses_flow(r) else {}))
                  for (r, s), d in zip(jobs, done2) for x in d["scores"]]
    score_rows += [dict(x, seed=s) for part in classical for x in part["scores"] for s in seeds]
    shape_rows = [dict(x, seed=s) for s, r in zip(seeds, shapes) for x in r["scores"] if x["method"] == "shape_model"]
    shape_rows += [dict(x, seed=s) for x in shapes[0]["scores"] if x["method"] != "shape_model" for s in seeds]
    curves = {("flow", "flow_net", s): f["training"]["val_curve"] for s, f in zip(seeds, flows)}
    curves |= {("shape", "shape_model", s): r["training"]["val_curve"] for s, r in zip(seeds, shapes)}
    curves |= {("inpaint", r, s): d["training"]["val_curve"] for (r, s), d in zip(jobs, done2)}
    results = VoinResults(pd.DataFrame(score_rows), pd.DataFrame(training), pd.DataFrame(flow_rows),
                          pooled_epe(pd.DataFrame(flow_rows)),
                          pd.DataFrame(shape_rows), splits, seconds, curves)
    if with_studies:
        from instseg.video.voin.studies import run_studies

        tic = time.perf_counter()
        results.studies = run_studies(setup, paths)
        seconds["studies"] = time.perf_counter() - tic
    return results


def pooled_epe(flow: pd.DataFrame) -> pd.DataFrame:
    """Per seed, EPE pooled over the pixels of every val sample's object and occluded part, net and DIS."""
    sums = flow.groupby("seed").sum(numeric_only=True)
    return pd.DataFrame({f"{m}_epe_{r}": sums[f"{m}_{r}_sum"] / sums[f"{m}_{r}_px"]
                         for m in ("flow_net", "dis") for r in ("object", "occluded")}).reset_index()


def load_shape(setup: VoinSetup, seed: int, out_dir: str | Path) -> ShapeCompletion:
    model = ShapeCompletion(setup.shape_model)
    model.load_state_dict(torch.load(Path(out_dir) / f"shape_s{seed}" / "shape.pt", weights_only=True))
    return model.eval()


def load_flow(setup: VoinSetup, seed: int, out_dir: str | Path) -> FlowCompletionNet:
    model = FlowCompletionNet(replace(setup.flow, seed=seed))
    model.load_state_dict(torch.load(Path(out_dir) / f"flow_s{seed}" / "flow.pt", weights_only=True))
    return model.eval()


def load_generator(setup: VoinSetup, row_name: str, seed: int, out_dir: str | Path) -> nn.Module:
    """A finished row's trained generator (``<row>_s<seed>/generator.pt``), in eval mode."""
    factory = setup.factory(row_name)
    row = setup.row(row_name)
    model = factory(row) if factory else voin_generator(row)
    model.load_state_dict(torch.load(Path(out_dir) / f"{row_name}_s{seed}" / "generator.pt", weights_only=True))
    return model.eval()


def predict_examples(setup: VoinSetup, data_root: str | Path, out_dir: str | Path, count: int = 6,
                     rows: Sequence[str] = ("voin", "sttn")) -> tuple[list[VoiSample], list[dict[str, np.ndarray]]]:
    """``count`` val samples (spread over the eval set) and, per sample, the first seed's results of
    ``rows`` beside DFVI-like's: the widget's material."""
    out = Path(out_dir)
    paths = RunPaths(str(Path(data_root)), str(out / "voi"), str(out), str(out.parent))
    seed = setup.seeds[0]
    samples = eval_set(setup, paths)
    picks = [samples[i] for i in spread(count, len(samples))]
    models = {r: load_generator(setup, r, seed, out) for r in rows if (out / f"{r}_s{seed}" / "generator.pt").is_file()}
    crops = {r: {c.name: c for c in _crops(setup, paths, "val", seed if setup.uses_flow(r) else None)} for r in models}
    predictions = []
    for s in picks:
        name = sample_name(s)
        pred = {"DFVI-like": dfvi_like(s.corrupted, s.visible, s.occluded, s.amodal, initial_flows(s.corrupted),
                                       record=name)}
        for r, model in models.items():
            pred[r] = inpaint_clip(model, s, setup.inpaint.crop, cropped=crops[r][name])
        predictions.append(pred)
    return picks, predictions


def seed_table(scores: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Per method and seed, the mean of each metric over samples (the ``runs`` frame of the verdicts)."""
    return scores.groupby(["method", "seed"], as_index=False)[list(metrics)].mean()


def unit_tables(scores: pd.DataFrame, metric: str, methods: Sequence[str]) -> dict[str, pd.DataFrame]:
    """Per method, ``metric`` per sample (index) and seed (columns), over the samples every method has."""
    tables = {m: scores[scores.method == m].pivot(index="sample", columns="seed", values=metric) for m in methods}
    common = sorted(set.intersection(*(set(t.dropna().index) for t in tables.values())))
    return {m: t.loc[common] for m, t in tables.items()}

