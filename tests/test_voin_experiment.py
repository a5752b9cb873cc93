"""Notebook 07's scoring and bookkeeping: per-sample scores that a perfect fill wins, reuse of finished jobs only
under the same settings, paired tables over the same samples, and the smoke-scale experiment end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from instseg.errors import InputError
from instseg.evaluation.inpainting import region_psnr
from instseg.evaluation.lpips import LPIPS
from instseg.video.voin.data.samples import VoiSample
from instseg.video.voin.experiment import (VoinSetup, finish_job, finished_result, fingerprint, seed_table, spread,
                                           start_job, unit_tables)
from instseg.video.voin.scoring import clean_warping_error, object_warping_error, score_inpainting


def _sample(size: int = 40, length: int = 3) -> VoiSample:
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, size=(length, size, size, 3), dtype=np.uint8)
    amodal = np.zeros((length, size, size), bool)
    amodal[:, 10:30, 10:30] = True
    occluder = np.zeros_like(amodal)
    occluder[:, 20:34, 20:34] = True
    corrupted = clean.copy()
    corrupted[occluder] = 128
    occluded = amodal & occluder
    return VoiSample(corrupted, clean, amodal, occluded, occluder, amodal & ~occluder,
                     {"kind": "synthetic", "video_id": 1, "track_id": 1, "start": 0, "length": length})


@pytest.fixture(scope="module")
def lpips() -> LPIPS:
    return LPIPS()


def test_perfect_fill_wins_every_metric(lpips):
    s = _sample()
    zero = np.zeros((2, 40, 40, 2))
    perfect = score_inpainting(s.clean.copy(), s, zero, lpips, win_size=7)
    grey = s.corrupted.copy()
    worse = score_inpainting(grey, s, zero, lpips, win_size=7)
    assert perfect["psnr"] == np.inf and perfect["psnr_hole"] == np.inf
    assert perfect["ssim"] == pytest.approx(1.0) and perfect["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert worse["psnr"] < 40 and worse["ssim"] < 1 and worse["lpips"] > 0
    assert worse["psnr_hole"] == pytest.approx(region_psnr(grey, s.clean, s.occluded))


def test_object_warping_error_by_hand():
    """Zero flow, frame 1 = frame 0 + 0.1 (of 1) everywhere: E_warp = 0.01 on the object, whatever it is."""
    frames = np.zeros((2, 8, 8, 3))
    frames[1] += 25.5
    amodal = np.zeros((2, 8, 8), bool)
    amodal[0, 2:5, 2:5] = True
    assert object_warping_error(frames, np.zeros((1, 8, 8, 2)), amodal) == pytest.approx(0.01)
    assert np.isnan(object_warping_error(frames, np.zeros((1, 8, 8, 2)), np.zeros_like(amodal)))


def test_clean_frames_warp_error_is_zero_for_a_static_scene():
    s = _sample()
    static = VoiSample(s.corrupted, np.repeat(s.clean[:1], 3, 0), s.amodal, s.occluded, s.occluder, s.visible, s.meta)
    assert clean_warping_error(static, np.zeros((2, 40, 40, 2))) == pytest.approx(0.0)


def test_scoring_refuses_a_prediction_of_another_shape(lpips):
    s = _sample()
    with pytest.raises(InputError, match="video 1 track 1"):
        score_inpainting(s.clean[:, :20], s, np.zeros((2, 40, 40, 2)), lpips, win_size=7)


def test_finished_jobs_are_reused_only_under_the_same_settings(tmp_path):
    key = fingerprint(VoinSetup().inpaint, 0)
    assert finished_result(tmp_path, key) is None
    finish_job(tmp_path, key, {"scores": [1, 2]})
    assert finished_result(tmp_path, key)["scores"] == [1, 2]
    assert finished_result(tmp_path, fingerprint(VoinSetup().inpaint, 1)) is None
    (tmp_path / "result.json").write_text("{not json")
    assert finished_result(tmp_path, key) is None


def test_spread_and_unknown_rows():
    assert spread(None, 5) == [0, 1, 2, 3, 4] and spread(3, 5) == [0, 2, 4] and spread(9, 3) == [0, 1, 2]
    with pytest.raises(InputError, match="unknown rows"):
        VoinSetup(rows=("voin", "propainter")).check()
    with pytest.raises(InputError, match="video.voin"):
        VoinSetup.from_dict({"no_such_key": 1})


def test_unit_tables_pair_samples_and_seeds():
    scores = pd.DataFrame([{"method": m, "seed": s, "sample": f"x{i}", "psnr": 10 * (m == "b") + i + s}
                           for m in "ab" for s in (0, 1) for i in range(3)])
    scores = scores[~((scores.method == "a") & (scores["sample"] == "x2") & (scores.seed == 1))]
    units = unit_tables(scores, "psnr", ["a", "b"])
    assert list(units["a"].index) == ["x0", "x1"] and list(units["a"].columns) == [0, 1]
    assert (units["b"] - units["a"]).to_numpy().tolist() == [[10, 10], [10, 10]]
    runs = seed_table(scores, ["psnr"])
    assert runs.loc[(runs.method == "b") & (runs.seed == 0), "psnr"].item() == pytest.approx(11.0)


def test_smoke_experiment_end_to_end(tmp_path, smoke_video_dir, smoke_runs_dir):
    """Every phase at the smoke scale (the studies with the smoke Faster R-CNN as the tracker), then a
    rerun that reuses every finished job."""
    from instseg.config import load_params
    from instseg.video.params import video_section
    from instseg.video.voin.experiment import run_voin_experiment

    setup = VoinSetup.from_dict(video_section(load_params(Path(__file__).parents[1] / "params.yaml"), "smoke", "voin"))
    first = run_voin_experiment(setup, smoke_video_dir, smoke_runs_dir, tmp_path / "voin", with_studies=True)
    methods = set(first.scores.method)
    assert {"telea", "dfvi_like", "fgvc_like", "dfvi_like_exact", *setup.rows} <= methods
    per = first.scores.groupby(["method", "seed"]).size()
    assert per.loc[("voin", setup.seeds[0])] == per.loc[("telea", setup.seeds[0])]  # the same samples
    assert set(first.training.stage) == {"flow", "shape", "inpaint"}
    assert (tmp_path / "voin" / f"voin_s{setup.seeds[0]}" / "voin.json").is_file()
    robust, e2e = first.studies["robustness"], first.studies["end_to_end"]
    conditions = ["dilate_0", "dilate_4", "shift"]
    assert sorted(set(robust.condition)) == sorted(conditions) and set(robust.method) == {"voin", "dfvi_like"}
    assert len(robust) == len(conditions) * 2 * setup.study_samples * len(setup.seeds)
    # the true masks' row of the study is the main table's VOIN on the same sample and seed
    main = first.scores[first.scores.method == "voin"].set_index(["sample", "seed"]).psnr_hole
    true = robust[(robust.condition == "dilate_0") & (robust.method == "voin")].set_index(["sample", "seed"]).psnr_hole
    assert np.allclose(true, main.loc[true.index])
    assert {"none", "tracked", "true"} == set(e2e.masks)
    assert len(first.studies["end_to_end_matches"]) == setup.study_samples * len(setup.seeds)
    again = run_voin_experiment(setup, smoke_video_dir, smoke_runs_dir, tmp_path / "voin", with_studies=True)
    pd.testing.assert_frame_equal(first.scores, again.scores)
    pd.testing.assert_frame_equal(first.studies["robustness"], again.studies["robustness"])
    assert again.seconds["inpaint"] < first.seconds["inpaint"]
    assert again.seconds["studies"] < first.seconds["studies"]


def test_a_collapsed_training_fails_the_plateau_check_however_flat():
    from instseg.video.voin.experiment import training_row

    flat_after_collapse = {"seconds": 1.0, "plateau_passed": True, "tail_improvement": 0.0, "phase_improvement": 0.0,
                           "plateau": {"passed": True}, "val_curve": [[50, 0.35], [100, 0.92], [150, 0.92]]}
    row = training_row("inpaint", "sttn", 0, flat_after_collapse)
    assert row["diverged"] and not row["plateau_passed"] and not row["plateau"]["passed"]
    learning = dict(flat_after_collapse, val_curve=[[50, 0.35], [100, 0.30], [150, 0.30]])
    assert training_row("inpaint", "voin", 0, learning)["plateau_passed"]
    wandering = dict(flat_after_collapse, val_curve=[[50, 0.35], [100, 0.34], [150, 0.36]])  # +3%: not diverged
    assert not training_row("flow", "flow_net", 0, wandering)["diverged"]


def test_only_sttn_trains_at_its_own_rate():
    setup = VoinSetup(sttn_lr=0.002)
    assert setup.training("sttn").lr == 0.002 and setup.training("voin") == setup.inpaint
    assert VoinSetup().training("sttn") == VoinSetup().inpaint


def test_a_job_resumes_under_its_own_settings_and_starts_afresh_under_others(tmp_path):
    job = tmp_path / "voin_s0"
    assert start_job(job, "a") is None
    (job / "checkpoints").mkdir()
    (job / "checkpoints" / "last.pt").write_bytes(b"x")
    assert start_job(job, "a") is None and (job / "checkpoints" / "last.pt").is_file()  # interrupted: resume
    finish_job(job, "a", {"scores": []})
    assert start_job(job, "a") == {"fingerprint": "a", "scores": []}
    assert start_job(job, "a", [job / "crops.pkl"]) is None  # finished, but a file it needs is missing
    assert start_job(job, "b") is None and not (job / "checkpoints").exists()  # other settings: emptied


def test_studies_need_the_true_masks_and_known_gross_errors():
    with pytest.raises(InputError, match="dilation 0"):
        VoinSetup(dilations=(4, 14)).check()
    with pytest.raises(InputError, match="unknown gross errors"):
        VoinSetup(gross_errors=("blur",)).check()
