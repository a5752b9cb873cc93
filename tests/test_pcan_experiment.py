"""Notebook 05's experiment end to end on the smoke benchmark and detector: every row scored with
its kind, runs that ``instseg track --checkpoint`` reads, and a clear error without notebook 04's runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from instseg.config import load_params
from instseg.errors import InputError
from instseg.video.params import video_section
from instseg.video.pcan.experiment import PCANSetup, run_pcan_experiment
from instseg.video.tracking.baselines import TrackingSetup, run_baselines

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_setups() -> tuple[PCANSetup, TrackingSetup]:
    params = load_params(REPO / "params.yaml")
    return (PCANSetup.from_dict(video_section(params, "smoke", "pcan")),
            TrackingSetup.from_dict(video_section(params, "smoke", "tracking")))


def test_missing_baseline_runs_name_the_folder(smoke_setups, smoke_video_dir: Path, smoke_runs_dir: Path,
                                               tmp_path: Path) -> None:
    pcan, tracking = smoke_setups
    with pytest.raises(InputError, match="notebook 04"):
        run_pcan_experiment(pcan, tracking, smoke_video_dir, smoke_runs_dir, tmp_path / "pcan",
                            trackers_dir=tmp_path / "none")


def test_every_row_is_scored_with_its_kind_and_runs_track_a_video(smoke_setups, smoke_video_dir: Path,
                                                                  smoke_runs_dir: Path, tmp_path: Path) -> None:
    pcan, tracking = smoke_setups
    run_baselines(tracking, smoke_video_dir, smoke_runs_dir, tmp_path / "trackers")
    results = run_pcan_experiment(pcan, tracking, smoke_video_dir, smoke_runs_dir, tmp_path / "pcan",
                                  trackers_dir=tmp_path / "trackers")
    kinds = results.runs.groupby("row")["kind"].first().to_dict()
    assert kinds == {"mask_iou": "baseline", "quasi_dense": "baseline", "pcan": "trained", "length_1": "trained",
                     "nonlocal": "trained", "no_propagation": "inference", "initial": "inference",
                     "length_1+bank": "inference", "protos_0_0": "refine", "protos_2_2": "refine",
                     "bilayer": "refine", "pcan@1": "test-time", "pcan@4": "test-time", "nonlocal@4": "test-time"}
    assert (results.runs.groupby("row").size() == len(tracking.seeds)).all()
    assert set(results.training["stage"]) == {"clips", "refine"}
    assert len(results.training) == len(tracking.seeds) * (len(pcan.trained) + 3)
    assert results.runs[["AP", "MOTSA", "IDF1"]].notna().all().all()
    # the inference and refine rows share the default runs' identities: same ID switches as pcan
    by = results.runs.set_index(["row", "seed"])["IDSW"]
    for seed in tracking.seeds:
        assert by[("no_propagation", seed)] == by[("pcan", seed)] == by[("protos_0_0", seed)]

    from instseg.cli import main

    video = sorted((smoke_video_dir / "frames" / "val").iterdir())[0]  # a folder of frames
    out = tmp_path / "tracks.json"
    assert main(["track", "--video", str(video), "--checkpoint", str(tmp_path / "pcan" / "pcan_s0"),
                 "--out", str(out)]) == 0
    assert out.is_file()


def test_the_bilayer_row_reads_its_own_schedule_over_the_refine_one() -> None:
    setup = PCANSetup.from_dict({"refine": {"iters": 300, "lr": 0.002}, "bilayer_refine": {"iters": 600}})
    assert setup.refine_training("bilayer").iters == 600
    assert setup.refine_training("bilayer").lr == 0.002  # the rest from ``refine``
    assert setup.refine_training("protos_10_10").iters == 300
    assert PCANSetup.from_dict({}).refine_training("bilayer") == PCANSetup.from_dict({}).refine
    with pytest.raises(InputError, match="pcan.refine"):
        PCANSetup.from_dict({"bilayer_refine": {"itres": 600}})
