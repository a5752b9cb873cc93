"""Scoring the classical baselines on a VOI sample: the hole EPE by hand, the summary's means, and
one sample of a tiny generated benchmark end to end (rows, the oracle's zero EPE, accounting)."""

from __future__ import annotations

import numpy as np
import pytest

from instseg.video.data.occluded_shapes_vis import SMOKE, VideoBenchmarkConfig, build_video_benchmark, load_scenes
from instseg.video.voin.baseline_eval import METRICS, evaluate_sample, hole_epe, summarise
from instseg.video.voin.data import VoiConfig, build_voi_split, iter_samples

CFG = VoiConfig(clip_length=6, clip_stride=2, min_area=30, natural_min_occluded=0.05, natural_min_frames=1,
                natural_min_visible_frames=3, synthetic_per_video=1, natural_per_video=1)


def test_hole_epe_by_hand():
    hole = np.zeros((3, 2, 2), dtype=bool)
    hole[0, 0, 0] = hole[2, 1, 1] = True
    exact = {d: np.zeros((2, 2, 2, 2)) for d in ("forward", "backward")}
    pred = {d: np.zeros((2, 2, 2, 2)) for d in ("forward", "backward")}
    pred["forward"][0, 0, 0] = (3.0, 4.0)  # on frame 0's hole pixel: error 5
    pred["backward"][1, 1, 1] = (0.0, 1.0)  # backward[1] lives on frame 2: error 1
    pred["forward"][1, 1, 1] = (9.0, 9.0)  # frame 1 has no hole: not counted
    assert hole_epe(pred, exact, hole) == pytest.approx(3.0)
    assert np.isnan(hole_epe(pred, exact, np.zeros_like(hole)))


def test_summarise_means_per_method_and_flows():
    base = {k: 1.0 for k in METRICS}
    rows = [dict(base, method="a", flows="-", psnr=30.0, hole_epe=float("nan")),
            dict(base, method="a", flows="-", psnr=34.0, hole_epe=float("nan")),
            dict(base, method="b", flows="dis", psnr=20.0, hole_epe=2.0),
            dict(base, method="b", flows="dis", psnr=22.0, hole_epe=float("nan"))]
    a, b = summarise(rows)
    assert (a["method"], a["samples"], a["psnr"]) == ("a", 2, 32.0) and np.isnan(a["hole_epe"])
    assert (b["flows"], b["psnr"], b["hole_epe"]) == ("dis", 21.0, 2.0)


def test_one_sample_end_to_end(tmp_path):
    bench = VideoBenchmarkConfig.from_dict(dict(SMOKE, split_sizes={"train": 0, "val": 1, "test": 0}))
    build_video_benchmark(bench, tmp_path / "vis")
    annotations = tmp_path / "vis" / "annotations" / "val.json"
    build_voi_split(annotations, tmp_path / "voi", "val", CFG)
    entry, sample = next(iter_samples(tmp_path / "voi" / "val" / "index.json"))
    rows = evaluate_sample(sample, load_scenes(annotations), record=entry["file"], win_size=7)
    assert [(r["method"], r["flows"]) for r in rows] == [
        ("cv2_inpaint_only", "-"), ("dfvi_like", "dis"), ("fgvc_like", "dis"), ("dfvi_like", "exact"),
        ("fgvc_like", "exact")]
    by = {(r["method"], r["flows"]): r for r in rows}
    assert by["dfvi_like", "exact"]["hole_epe"] == 0.0 and by["dfvi_like", "dis"]["hole_epe"] > 0
    telea = by["cv2_inpaint_only", "-"]
    assert telea["propagated_fraction"] == 0.0 and np.isnan(telea["hole_epe"])
    for r in rows:
        assert 0.0 <= r["propagated_fraction"] <= 1.0 and np.isfinite(r["psnr"]) and r["seconds"] > 0
        assert r["region_psnr"] < r["psnr"]  # the hole is a larger share of the object than of the frame
