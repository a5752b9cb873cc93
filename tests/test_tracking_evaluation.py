"""Scoring trackers on the smoke video benchmark: the ground truth replayed as a tracker scores
perfectly on every metric, one that renumbers a track after each full occlusion loses exactly
identity recovery (and IDSW), and the baselines experiment runs end to end, resumes to the same
scores and leaves tracker runs that ``instseg track`` loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from instseg.config import load_params
from instseg.video.data.kitti_mots import read_mots_dir
from instseg.video.data.track_results import TrackedVideo
from instseg.video.data.ytvis import load_ytvis_gt
from instseg.video.params import video_section
from instseg.video.tracking.baselines import TrackingSetup, per_video_table, recovery_table, run_baselines
from instseg.video.tracking.evaluate import evaluate_tracking
from instseg.video.tracking.runs import load_tracker_run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def val(smoke_video_dir: Path) -> tuple[dict, dict]:
    return load_ytvis_gt(smoke_video_dir / "annotations" / "val.json"), read_mots_dir(smoke_video_dir / "mots" / "val")


def _replay(gt: dict, renumber_after_gap: bool = False) -> dict[int, TrackedVideo]:
    """The visible ground truth as a tracker's output (score 1); optionally a new id after every
    frame in which a track was fully hidden."""
    out = {}
    for video in gt["videos"]:
        anns = [a for a in gt["annotations"] if a["video_id"] == video["id"]]
        tracked, next_id, ids = TrackedVideo(), 1000, {a["id"]: a["track_id"] for a in anns}
        for t in range(video["length"]):
            present = [a for a in anns if a["segmentations"][t] is not None]
            if renumber_after_gap:
                for a in anns:
                    if a["segmentations"][t] is None and a["amodal_segmentations"][t] is not None:
                        ids[a["id"]], next_id = next_id, next_id + 1
            masks = np.stack([mask_utils.decode({**a["segmentations"][t], "counts": a["segmentations"][t]["counts"]
                                                 .encode()}) for a in present]) if present else \
                np.zeros((0, video["height"], video["width"]), np.uint8)
            tracked.add({"masks": torch.from_numpy(masks).bool(), "scores": torch.ones(len(present)),
                         "labels": torch.tensor([a["category_id"] for a in present], dtype=torch.int64)},
                        torch.tensor([ids[a["id"]] for a in present], dtype=torch.int64))
        out[video["id"]] = tracked
    return out


def test_the_ground_truth_replayed_scores_perfectly(val: tuple[dict, dict]) -> None:
    gt, gt_mots = val
    scores = evaluate_tracking(gt, _replay(gt), gt_mots, min_gap=1)
    s = scores.summary
    for key in ("AP", "AP50", "AP75", "HOTA", "DetA", "AssA", "MOTSA", "MOTSP", "IDF1"):
        assert s[key] == pytest.approx(1.0), key
    assert s["IDSW"] == 0
    assert s["recovery_events"] > 0, "the smoke benchmark schedules full occlusions"
    assert s["recovery"] == 1.0
    assert (scores.per_video["MOTSA"] == 1.0).all() and len(scores.per_video) == len(gt["videos"])
    assert scores.events["occlusion"].sum() == s["recovery_events"]


def test_renumbering_after_each_full_occlusion_loses_recovery_only(val: tuple[dict, dict]) -> None:
    gt, gt_mots = val
    s = evaluate_tracking(gt, _replay(gt, renumber_after_gap=True), gt_mots, min_gap=1).summary
    assert s["recovery"] == 0.0 and s["recovery_events"] > 0
    assert s["IDSW"] >= s["recovery_events"]
    assert s["DetA"] == pytest.approx(1.0) and s["MOTSP"] == pytest.approx(1.0)
    assert s["AssA"] < 1.0 and s["IDF1"] < 1.0


def test_baselines_run_end_to_end_and_resume_to_the_same_scores(smoke_video_dir: Path, smoke_runs_dir: Path,
                                                                 tmp_path: Path) -> None:
    setup = TrackingSetup.from_dict(video_section(load_params(REPO / "params.yaml"), "smoke", "tracking"))
    results = run_baselines(setup, smoke_video_dir, smoke_runs_dir, tmp_path / "trackers")
    runs = results.runs
    assert sorted(map(tuple, runs[["tracker", "seed"]].to_numpy().tolist())) == \
        [("mask_iou", 0), ("mask_iou", 1), ("quasi_dense", 0), ("quasi_dense", 1)]
    for metric in ("AP", "IDF1", "HOTA", "recovery"):
        values = runs[metric].dropna()
        assert ((values >= 0.0) & (values <= 1.0)).all(), metric
    assert (np.isfinite(runs["MOTSA"]) & (runs["MOTSA"] <= 1.0)).all()  # MOTSA may be negative
    iou = runs[runs.tracker == "mask_iou"].drop(columns="seed")
    assert iou.iloc[0].equals(iou.iloc[1]), "the IoU tracker has no trained part: one run, the same per seed"
    assert list(results.training.seed) == [0, 1]
    assert per_video_table(results, "quasi_dense", "HOTA", (0, 1)).shape == (2, 2)
    assert list(recovery_table(results, "quasi_dense", (0, 1)).columns) == [0, 1]
    for name in ("mask_iou", "quasi_dense_s0", "quasi_dense_s1"):
        loaded = load_tracker_run(tmp_path / "trackers" / name)
        assert (loaded.embed_head is None) == (name == "mask_iou")
    again = run_baselines(setup, smoke_video_dir, smoke_runs_dir, tmp_path / "trackers", resume=True)
    assert again.runs.equals(runs)
