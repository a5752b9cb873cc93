"""``instseg eval-video`` and ``instseg eval-mots`` on the smoke video benchmark: the ground truth
scored against itself is perfect, empty results score 0, a missing result file is an empty one,
and results for an unknown video or sequence end with exit 2 naming it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from instseg.cli import main
from instseg.video.data.ytvis import load_ytvis_gt


def _gt_as_results(gt: dict) -> list[dict]:
    return [{"video_id": a["video_id"], "category_id": a["category_id"], "score": 1.0,
             "segmentations": a["segmentations"]} for a in gt["annotations"]]


def _run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_video_perfect_empty_and_unknown(tmp_path: Path, smoke_video_dir: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    gt_path = smoke_video_dir / "annotations" / "val.json"
    gt = load_ytvis_gt(gt_path)
    results = tmp_path / "results.json"
    results.write_text(json.dumps(_gt_as_results(gt)))
    code, out, _ = _run(capsys, "eval-video", "--gt", str(gt_path), "--dt", str(results),
                        "--out", str(tmp_path / "m.json"), "--by-occlusion", "--min-gap", "1")
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert code == 0 and "AP" in out
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AR10"] == pytest.approx(1.0)
    assert set(metrics) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}
    assert set(metrics["by_occlusion"]) == {"light", "medium", "heavy"}
    recovery = metrics["identity_recovery"]
    assert recovery["events"] > 0 and recovery["rate"] == 1.0 and "identity recovery" in out
    results.write_text("[]")
    assert _run(capsys, "eval-video", "--gt", str(gt_path), "--dt", str(results), "--out", str(tmp_path / "e.json"))[0] == 0
    assert json.loads((tmp_path / "e.json").read_text())["AP"] == 0.0
    results.write_text(json.dumps([{"video_id": 987654, "category_id": 1, "score": 0.5,
                                    "segmentations": [None] * 8}]))
    code, _, err = _run(capsys, "eval-video", "--gt", str(gt_path), "--dt", str(results))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "987654" in lines[0] and str(results) in lines[0]


def test_eval_mots_perfect_missing_and_unknown(tmp_path: Path, smoke_video_dir: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    gt_dir = smoke_video_dir / "mots" / "val"
    classes = smoke_video_dir / "annotations" / "val.json"
    dt_dir = tmp_path / "dt"
    shutil.copytree(gt_dir, dt_dir)
    code, out, _ = _run(capsys, "eval-mots", "--gt", str(gt_dir), "--dt", str(dt_dir), "--classes", str(classes),
                        "--out", str(tmp_path / "m.json"), "--min-gap", "1")
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert code == 0 and "mean" in out and "identity recovery" in out
    present = [m for m in metrics["per_class"].values() if m["TP"] + m["FN"] > 0]
    assert present and all(m["MOTSA"] == pytest.approx(1.0) and m["IDSW"] == 0 for m in present)
    assert metrics["identity_recovery"]["rate"] in (None, 1.0)
    first = sorted(dt_dir.glob("*.txt"))[0]
    first.unlink()  # a missing result file is an empty one: its objects are all missed
    assert _run(capsys, "eval-mots", "--gt", str(gt_dir), "--dt", str(dt_dir), "--classes", str(classes),
                "--out", str(tmp_path / "m2.json"))[0] == 0
    assert json.loads((tmp_path / "m2.json").read_text())["mean"]["DetA"] < metrics["mean"]["DetA"]
    (dt_dir / "no_such_sequence.txt").write_text("")
    code, _, err = _run(capsys, "eval-mots", "--gt", str(gt_dir), "--dt", str(dt_dir), "--classes", str(classes))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "no_such_sequence" in lines[0]


def test_identity_recovery_of_vis_results_sees_a_track_split_at_its_gap(smoke_video_dir: Path) -> None:
    from instseg.video.evaluation.recovery import identity_recovery_vis

    gt = load_ytvis_gt(smoke_video_dir / "annotations" / "val.json")
    whole = _gt_as_results(gt)
    split = []
    for result in whole:
        segs = result["segmentations"]
        gap = next((t for t in range(1, len(segs)) if segs[t] is None and segs[t - 1] is not None), None)
        if gap is None:
            split.append(result)
            continue
        split.append(result | {"segmentations": [s if t < gap else None for t, s in enumerate(segs)]})
        split.append(result | {"segmentations": [s if t >= gap else None for t, s in enumerate(segs)]})
    kept = identity_recovery_vis(gt, whole, min_gap=1)
    broken = identity_recovery_vis(gt, split, min_gap=1)
    assert kept["events"] == broken["events"] > 0
    assert kept["rate"] == 1.0 and broken["rate"] == 0.0 and broken["swapped"] == broken["events"]
