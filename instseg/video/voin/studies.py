"""Phase 3 of notebook 07's experiment: what VOIN does with masks that are not the truth.

* **robustness** (Fig. 5.13): on the study samples, VOIN (each seed's trained generator, flow and
  propagation) and DFVI-like (DIS, propagation, TELEA) given the holes of :mod:`mask_errors`
  (dilated by 0..14 px, shifted, dropped in every other frame), scored against the clean frames;
* **end to end**: the target's visible masks from a tracker on the corrupted frames
  (:mod:`tracked_masks`), its amodal masks from the seed's shape model, then VOIN and DFVI-like;
  beside them the corrupted input itself (nothing painted: the floor) and how good the tracked and
  completed masks were.

Every row of a study reads the same samples and is scored by :func:`scoring.score_inpainting`
against the sample's clean frames over the union of the given and the true hole, so rows pair
over (sample, seed) like Table 5.8's. Jobs persist their ``result.json`` under ``<out>/studies``.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from instseg.engine.checkpoint import atomic_write
from instseg.video.tracking.runs import build_tracker, load_tracker_run
from instseg.video.voin.classical import dfvi_like
from instseg.video.voin.data import VoiSample
from instseg.video.voin.flow import FlowCompletionNet, complete_clip_flows
from instseg.video.voin.flow_targets import initial_flows
from instseg.video.voin.inpaint_data import CropSettings, crop_sample, propagate_sample, sample_name, track_key
from instseg.video.voin.inpaint_training import inpaint_clip
from instseg.video.voin.mask_errors import condition_names, corrupt_masks
from instseg.video.voin.shape_training import track_categories
from instseg.video.voin.tracked_masks import match_target, mean_iou, predict_tracked_amodal, track_clip, \
    tracked_sample
from instseg.video.voin.experiment import (RunPaths, VoinSetup, annotations_path, eval_set, fingerprint,
                                           finish_job, load_flow, load_generator, load_shape,
                                           pool_map, score_method, set_threads, start_job)


def voin_inpaint(generator: nn.Module, flow_net: FlowCompletionNet | None, sample: VoiSample, crop: CropSettings,
                 dis: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """The sample inpainted by a trained row the way the experiment scores it: with ``flow_net``, the
    sample's DIS flows completed by it and propagated through the hole first (the generator reads the
    propagated crop); a sample with no hole comes back as it is."""
    if not sample.occluded.any():
        return sample.corrupted.copy()
    propagation = None
    if flow_net is not None:
        dis = initial_flows(sample.corrupted) if dis is None else dis
        propagation = propagate_sample(sample, complete_clip_flows(flow_net, sample.corrupted, sample.visible,
                                                                   sample.amodal, dis))
    return inpaint_clip(generator, sample, crop, cropped=crop_sample(sample, crop, propagation=propagation))


def dfvi_inpaint(sample: VoiSample, dis: dict[str, np.ndarray]) -> np.ndarray:
    """DFVI-like on the sample's (given) masks along DIS; a sample with no hole comes back as it is."""
    if not sample.occluded.any():
        return sample.corrupted.copy()
    return dfvi_like(sample.corrupted, sample.visible, sample.occluded, sample.amodal, dis, record=sample_name(sample))


def _hole_sizes(given: VoiSample, truth: VoiSample) -> dict[str, float]:
    return {"hole_px": float(given.occluded.sum()), "true_hole_px": float(truth.occluded.sum()),
            "hole_iou": mean_iou(given.occluded, truth.occluded)}


def _file_digest(folder: Path) -> str:
    """A digest of a run folder's files (names and bytes): the study jobs that read the run redo when it changes."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------- jobs


def _study_dir(paths: RunPaths) -> Path:
    return Path(paths.out_dir) / "studies"


def _seedless_job(setup: VoinSetup, paths: RunPaths, threads: int | None = None) -> dict[str, Any]:
    """DFVI-like under every mask condition, the corrupted input's score, and (with a tracker run) the
    tracked target of every study sample (written to ``tracked.pkl``)."""
    set_threads(threads)
    job_dir = _study_dir(paths) / "seedless"
    tracker_dir = Path(paths.runs_root) / setup.tracker if setup.tracker else None
    tracker_key = _file_digest(tracker_dir) if tracker_dir is not None and tracker_dir.is_dir() else None
    key = fingerprint(setup.voi, setup.max_videos, setup.eval_samples, setup.study_samples, setup.dilations,
                      setup.gross_errors, setup.tracker, dict(setup.tracker_config), tracker_key, setup.ssim_window)
    if (done := start_job(job_dir, key, [] if tracker_key is None else [job_dir / "tracked.pkl"])) is not None:
        return done
    conditions = condition_names(setup.dilations, setup.gross_errors)
    rows, tracked = [], {}
    run = load_tracker_run(tracker_dir) if tracker_key is not None else None
    if run is not None and setup.tracker_config:
        run = replace(run, tracker=build_tracker(run.spec.tracker, {**run.spec.config, **setup.tracker_config}))
    for s in eval_set(setup, paths, study=True):
        dis = initial_flows(s.corrupted)
        for condition in conditions:
            given = corrupt_masks(s, condition)
            rows.append(score_method(setup, paths, "dfvi_like", dfvi_inpaint(given, dis), s, given.occluded,
                                     study="robustness", condition=condition, **_hole_sizes(given, s)))
        rows.append(score_method(setup, paths, "input", s.corrupted, s, study="end_to_end", masks="none"))
        if run is not None:
            tracked[sample_name(s)] = match_target(track_clip(run, s.corrupted), s.visible)
    if run is not None:
        atomic_write(job_dir / "tracked.pkl", lambda f: pickle.dump(tracked, f))
    return finish_job(job_dir, key, {"scores": rows, "tracker": setup.tracker if run is not None else None})


def _seed_job(setup: VoinSetup, seed: int, paths: RunPaths, with_tracked: bool, threads: int | None = None
              ) -> dict[str, Any]:
    """The seed's VOIN under every mask condition and, ``with_tracked``, VOIN and DFVI-like on the
    tracked masks completed by the seed's shape model (and how good those masks were)."""
    set_threads(threads)
    job_dir = _study_dir(paths) / f"seed_s{seed}"
    tracked_file = _study_dir(paths) / "seedless" / "tracked.pkl"
    tracked_bytes = tracked_file.read_bytes() if with_tracked else None
    tracked_key = hashlib.sha256(tracked_bytes).hexdigest()[:16] if tracked_bytes is not None else None
    voin_dir = Path(paths.out_dir) / f"voin_s{seed}"
    key = fingerprint(setup.voi, setup.max_videos, setup.eval_samples, setup.study_samples, setup.dilations,
                      setup.gross_errors, tracked_key, _file_digest(voin_dir), setup.shape_training,
                      setup.shape_model, setup.ssim_window)
    if (done := start_job(job_dir, key)) is not None:
        return done
    generator = load_generator(setup, "voin", seed, paths.out_dir)
    flow_net = load_flow(setup, seed, paths.out_dir) if setup.uses_flow("voin") else None
    shape = load_shape(setup, seed, paths.out_dir)
    crop = setup.inpaint.crop
    tracked = pickle.loads(tracked_bytes) if tracked_bytes is not None else {}
    categories = track_categories(annotations_path(paths, "val"))
    rows, matches = [], []
    for s in eval_set(setup, paths, study=True):
        name, dis = sample_name(s), initial_flows(s.corrupted)
        for condition in condition_names(setup.dilations, setup.gross_errors):
            given = corrupt_masks(s, condition)
            rows.append(score_method(setup, paths, "voin", voin_inpaint(generator, flow_net, given, crop, dis), s,
                                     given.occluded, study="robustness", condition=condition,
                                     **_hole_sizes(given, s)))
        if name not in tracked:
            continue
        target = tracked[name]
        amodal = predict_tracked_amodal(shape, target, setup.shape_training.crop_size, setup.shape_training.context)
        given = tracked_sample(s, target.visible, amodal)
        for method, pred in (("voin", voin_inpaint(generator, flow_net, given, crop, dis)),
                             ("dfvi_like", dfvi_inpaint(given, dis))):
            rows.append(score_method(setup, paths, method, pred, s, given.occluded, study="end_to_end",
                                     masks="tracked", **_hole_sizes(given, s)))
        matches.append({"sample": name, "kind": s.meta.get("kind"), "missed": target.missed,
                        "visible_iou": target.iou, "category_correct": target.category == categories[track_key(s)],
                        "amodal_iou": mean_iou(given.amodal, s.amodal), **_hole_sizes(given, s)})
    return finish_job(job_dir, key, {"scores": rows, "matches": matches})


def run_studies(setup: VoinSetup, paths: RunPaths) -> dict[str, pd.DataFrame]:
    """Both studies (module docstring): ``robustness`` (condition, method, seed, sample, metrics, hole
    sizes), ``end_to_end`` (masks: none / tracked / true, method, seed, sample, metrics) and
    ``end_to_end_matches`` (per seed and sample: the tracked and completed masks' quality). Without a
    tracker run (``setup.tracker`` None or its folder missing) the end-to-end frames are empty and
    ``tracker_missing`` says why."""
    seedless = pool_map(setup, [(_seedless_job, (setup, paths))])[0]
    with_tracked = seedless["tracker"] is not None
    seeds = list(setup.seeds)
    done = pool_map(setup, [(_seed_job, (setup, s, paths, with_tracked)) for s in seeds])
    scores = [dict(x, seed=s) for x in seedless["scores"] for s in seeds]
    scores += [dict(x, seed=s) for s, d in zip(seeds, done) for x in d["scores"]]
    frame = pd.DataFrame(scores)
    robust = frame[frame.study == "robustness"].drop(columns=["study", "masks"], errors="ignore")
    e2e = frame[frame.study == "end_to_end"].drop(columns=["study", "condition"], errors="ignore")
    # VOIN and DFVI-like with the true masks: the robustness study's undisturbed condition
    true = robust[robust.condition == condition_names(setup.dilations, ())[0]].drop(columns="condition")
    if with_tracked:
        e2e = pd.concat([e2e, true.assign(masks="true")], ignore_index=True)
    else:
        e2e = e2e.iloc[0:0]
    out = {"robustness": robust.reset_index(drop=True), "end_to_end": e2e.reset_index(drop=True),
           "end_to_end_matches": pd.DataFrame([dict(m, seed=s) for s, d in zip(seeds, done) for m in d["matches"]])}
    if not with_tracked:
        where = Path(paths.runs_root) / setup.tracker if setup.tracker else None
        out["tracker_missing"] = pd.DataFrame([{"tracker": setup.tracker, "reason": "not configured" if where is None
                                                else f"no run folder at {where}"}])
    return out
