"""The CLI: bad input ends with exit code 2 and one line naming the file and the record."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from instseg.cli import main

GOOD_GT = {
    "images": [{"id": 1, "file_name": "a.png", "height": 20, "width": 20},
               {"id": 2, "file_name": "b.png", "height": 20, "width": 20}],
    "annotations": [{"id": 10, "image_id": 1, "category_id": 3, "bbox": [2, 2, 8, 8], "area": 64, "iscrowd": 0,
                     "segmentation": [[2, 2, 10, 2, 10, 10, 2, 10]]}],
    "categories": [{"id": 3, "name": "thing"}],
}
GOOD_DT = [{"image_id": 1, "category_id": 3, "score": 0.9, "segmentation": [[2, 2, 10, 2, 10, 10, 2, 10]]}]


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("instseg: error: ")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    for fragment in fragments:
        assert fragment in lines[0]


def test_eval_good_input_prints_and_writes_metrics(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gt, dt, out = write(tmp_path / "gt.json", GOOD_GT), write(tmp_path / "dt.json", GOOD_DT), tmp_path / "m.json"
    code, stdout, _ = run(capsys, "eval", "--gt", str(gt), "--dt", str(dt), "--out", str(out))
    assert code == 0 and "AP50" in stdout
    metrics = json.loads(out.read_text())
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(metrics)
    assert metrics["AP"] == pytest.approx(100.0)


def test_malformed_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gt = tmp_path / "broken.json"
    gt.write_text('{"images": [}')
    code, _, err = run(capsys, "eval", "--gt", str(gt), "--dt", str(write(tmp_path / "dt.json", GOOD_DT)))
    assert_clean_error(code, err, "broken.json", "malformed JSON at line 1")


def test_unreadable_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = run(capsys, "eval", "--gt", str(tmp_path / "nope.json"), "--dt", str(tmp_path / "dt.json"))
    assert_clean_error(code, err, "nope.json", "file not found")


def test_missing_image(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"")
    gt = write(tmp_path / "gt.json", GOOD_GT)
    code, _, err = run(capsys, "data", "check", "--json", str(gt), "--images", str(tmp_path / "images"))
    assert_clean_error(code, err, "gt.json", "images[1] (id=2)", "missing image file", "b.png")


def test_polygon_with_fewer_than_three_points(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = copy.deepcopy(GOOD_GT)
    bad["annotations"][0]["segmentation"] = [[2, 2, 10, 2]]
    gt = write(tmp_path / "gt.json", bad)
    code, _, err = run(capsys, "eval", "--gt", str(gt), "--dt", str(write(tmp_path / "dt.json", GOOD_DT)))
    assert_clean_error(code, err, "gt.json", "annotations[0] (id=10, image_id=1)", "polygon 0 has 2 points")


def test_zero_area_box(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = copy.deepcopy(GOOD_GT)
    bad["annotations"][0]["bbox"] = [2, 2, 0, 8]
    gt = write(tmp_path / "gt.json", bad)
    code, _, err = run(capsys, "data", "check", "--json", str(gt))
    assert_clean_error(code, err, "gt.json", "annotations[0] (id=10, image_id=1)", "zero-area box")


def test_results_for_unknown_image(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gt = write(tmp_path / "gt.json", GOOD_GT)
    dt = write(tmp_path / "dt.json", GOOD_DT + [dict(GOOD_DT[0], image_id=99)])
    code, _, err = run(capsys, "eval", "--gt", str(gt), "--dt", str(dt))
    assert_clean_error(code, err, "dt.json", "results[1] (image_id=99)", "not in the ground truth")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    gt = tmp_path / "broken.json"
    gt.write_text("[")
    base = [sys.executable, "-m", "instseg.cli"]
    plain = subprocess.run(base + ["eval", "--gt", str(gt), "--dt", str(gt)], capture_output=True, text=True)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr and "broken.json" in plain.stderr
    debug = subprocess.run(base + ["--debug", "eval", "--gt", str(gt), "--dt", str(gt)], capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "InputError" in debug.stderr


def test_data_build_and_stats(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "bench"
    code, stdout, _ = run(capsys, "data", "build", "--scale", "smoke", "--out", str(out),
                          "--params", str(repo / "params.yaml"), "--workers", "1")
    assert code == 0 and "images/s" in stdout
    code, _, err = run(capsys, "data", "build", "--scale", "smoke", "--out", str(out), "--params", str(repo / "params.yaml"))
    assert_clean_error(code, err, "not empty")
    code, stdout, _ = run(capsys, "data", "stats", str(out), "--json")
    stats = json.loads(stdout)
    assert stats["val"]["images"] == 16 and 0 <= stats["val"]["coco_occ_share"] <= 1
    code, _, err = run(capsys, "data", "build", "--scale", "huge", "--out", str(tmp_path / "x"), "--params", str(repo / "params.yaml"))
    assert_clean_error(code, err, "unknown scale 'huge'")


def test_data_sync_regenerates_and_detects_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    repo = Path(__file__).resolve().parents[1]
    params = tmp_path / "params.yaml"
    params.write_text((repo / "params.yaml").read_text().replace("data:\n  scale: cpu", "data:\n  scale: smoke"))
    dvc_file = tmp_path / "data.dvc"
    dvc_file.write_text("outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  path: data/occluded_shapes\n")
    code, _, err = run(capsys, "data", "sync", "--dvc-file", str(dvc_file), "--params", str(params), "--workers", "1")
    assert_clean_error(code, err, "data.dvc", "regenerated benchmark hashes to")
    assert not (tmp_path / "data" / "occluded_shapes").exists(), "a mismatching build must not replace data/"
    from instseg.data.dvc_hash import dir_md5
    from instseg.data.occluded_shapes import BenchmarkConfig, build_benchmark
    from instseg.config import load_params, scale_params

    build_benchmark(BenchmarkConfig.from_dict(scale_params(load_params(params), "smoke")["benchmark"]), tmp_path / "ref")
    dvc_file.write_text(f"outs:\n- md5: {dir_md5(tmp_path / 'ref')}\n  path: data/occluded_shapes\n")
    code, stdout, _ = run(capsys, "data", "sync", "--dvc-file", str(dvc_file), "--params", str(params), "--workers", "1")
    assert code == 0 and "regenerated" in stdout
    code, stdout, _ = run(capsys, "data", "sync", "--dvc-file", str(dvc_file), "--params", str(params))
    assert code == 0 and "matches" in stdout


def _rle(mask) -> dict:
    from pycocotools import mask as mask_utils
    import numpy as np

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _occlusion_gt_and_results() -> tuple[dict, list[dict]]:
    """Image 1: A (behind, amodal 10x10) loses 30 px to B (in front, 10x6): ratio 0.3, visible
    boxes at IoU 0.23, so image 1 is COCO-OCC. A detection equal to A's visible mask is a perfect
    visible match (IoU 1) but only IoU 0.7 with A's amodal mask. Image 2: one object C (ratio 0.4,
    no detection, no pair: not COCO-OCC)."""
    import numpy as np

    def box(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        m = np.zeros((20, 20), dtype=bool)
        m[y0:y1, x0:x1] = True
        return m

    a_amodal, b = box(2, 2, 12, 12), box(7, 4, 17, 10)
    a_visible = a_amodal & ~b
    c_amodal, c_visible = box(2, 2, 12, 12), box(2, 2, 12, 8)

    def ann(i: int, image: int, visible: np.ndarray, amodal: np.ndarray, bbox: list, amodal_bbox: list) -> dict:
        return {"id": i, "image_id": image, "category_id": 3, "iscrowd": 0,
                "segmentation": _rle(visible), "bbox": bbox, "area": int(visible.sum()),
                "amodal_segmentation": _rle(amodal), "amodal_bbox": amodal_bbox, "amodal_area": int(amodal.sum()),
                "occlusion_ratio": round(1 - float(visible.sum()) / float(amodal.sum()), 6)}

    gt = {"images": [{"id": 1, "file_name": "a.png", "height": 20, "width": 20},
                     {"id": 2, "file_name": "b.png", "height": 20, "width": 20}],
          "categories": [{"id": 3, "name": "thing"}],
          "annotations": [ann(1, 1, a_visible, a_amodal, [2, 2, 10, 10], [2, 2, 10, 10]),
                          ann(2, 1, b, b, [7, 4, 10, 6], [7, 4, 10, 6]),
                          ann(3, 2, c_visible, c_amodal, [2, 2, 10, 6], [2, 2, 10, 10])]}
    assert [a["occlusion_ratio"] for a in gt["annotations"]] == [0.3, 0.0, 0.4]
    results = [{"image_id": 1, "category_id": 3, "score": 0.9, "segmentation": _rle(a_visible)},
               {"image_id": 1, "category_id": 3, "score": 0.8, "segmentation": _rle(b)}]
    return gt, results


def _bins(tmp_path: Path, capsys: pytest.CaptureFixture, *extra: str) -> dict[float, dict]:
    gt, dt = _occlusion_gt_and_results()
    out = tmp_path / "m.json"
    code, stdout, _ = run(capsys, "eval", "--gt", str(write(tmp_path / "gt.json", gt)),
                          "--dt", str(write(tmp_path / "dt.json", dt)), "--by-occlusion", "--out", str(out), *extra)
    assert code == 0
    bins = {b["bin"][0]: b for b in json.loads(out.read_text())["by_occlusion"]}
    printed = [line for line in stdout.splitlines() if line.startswith("AP occlusion 0.3-0.5")]
    assert len(printed) == 1 and printed[0].endswith(f"{bins[0.3]['AP']:.3f}")
    return bins


def test_eval_by_occlusion_honours_amodal(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Bin [0.3, 0.5) holds A (and C, undetected): A's detection is its visible mask, so the
    visible per-bin AP and the amodal one (IoU 0.7: half the IoU thresholds) must differ."""
    from instseg.evaluation import ap_by_occlusion

    visible, amodal = _bins(tmp_path, capsys), _bins(tmp_path, capsys, "--amodal")
    assert visible[0.3]["AP"] > amodal[0.3]["AP"] > 0
    gt, dt = _occlusion_gt_and_results()
    expected = {b["bin"][0]: b for b in ap_by_occlusion(gt, dt, amodal=True)}
    assert amodal == expected
    # and the top-level metrics agree in kind: amodal
    assert json.loads((tmp_path / "m.json").read_text())["amodal"] is True


def test_eval_by_occlusion_honours_subset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--subset occ keeps image 1 only (image 2 has a single object): C leaves bin [0.3, 0.5), so
    the bin counts one ground truth and A's perfect detection gives AP 100."""
    from instseg.data.occlusion import coco_occ_image_ids

    gt, _ = _occlusion_gt_and_results()
    assert coco_occ_image_ids(gt) == [1]
    everything, occ = _bins(tmp_path, capsys), _bins(tmp_path, capsys, "--subset", "occ")
    assert everything[0.3]["n_gt"] == 2 and occ[0.3]["n_gt"] == 1
    assert occ[0.3]["AP"] == pytest.approx(100.0) and everything[0.3]["AP"] < 100.0
    both = _bins(tmp_path, capsys, "--subset", "occ", "--amodal")
    assert both[0.3]["n_gt"] == 1 and both[0.3]["AP"] < occ[0.3]["AP"]
