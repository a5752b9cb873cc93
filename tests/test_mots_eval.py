"""evaluate_mots against TrackEval's own KittiMOTS pipeline on random cases, plus hand-computed cases."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import trackeval  # the oracle

from instseg.data.coco_json import mask_to_rle
from instseg.errors import InputError
from instseg.video.data.kitti_mots import IGNORE_CLASS, IGNORE_ID, MotsRow, write_kitti_mots
from instseg.video.evaluation.mots import evaluate_mots, evaluate_mots_sequences


CLASSES = {1: "car", 2: "pedestrian"}
FRACTIONS = {"HOTA": ("HOTA", "HOTA"), "DetA": ("HOTA", "DetA"), "AssA": ("HOTA", "AssA"),
             "MOTSA": ("CLEAR", "MOTA"), "MOTSP": ("CLEAR", "MOTP"), "sMOTSA": ("CLEAR", "sMOTA"),
             "IDF1": ("Identity", "IDF1")}
COUNTS = {"IDSW": ("CLEAR", "IDSW"), "TP": ("CLEAR", "CLR_TP"), "FP": ("CLEAR", "CLR_FP"),
          "FN": ("CLEAR", "CLR_FN"), "IDTP": ("Identity", "IDTP"), "IDFP": ("Identity", "IDFP"),
          "IDFN": ("Identity", "IDFN")}


def _box(h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    y, x = int(rng.integers(0, h - 2)), int(rng.integers(0, w - 2))
    return y, x, int(rng.integers(y + 2, min(h, y + 12) + 1)), int(rng.integers(x + 2, min(w, x + 12) + 1))


def _random_sequence(rng: np.random.Generator) -> tuple[list[tuple], list[tuple], int]:
    """GT tracks that drift, vanish and come back; predictions that jitter, miss, switch ids and hallucinate.

    Masks are painted onto one label map per frame and side, so no two masks of a side ever overlap.
    """
    h, w = int(rng.integers(16, 33)), int(rng.integers(16, 33))
    n_frames = int(rng.integers(5, 16))
    tracks = [(1000 * c + k, c, _box(h, w, rng)) for k, c in enumerate(rng.integers(1, 3, rng.integers(1, 6)))]
    pred_id = {obj: 1000 * (obj // 1000) + 100 + k for k, (obj, _, _) in enumerate(tracks)}
    gt_rows, dt_rows = [], []
    for t in range(n_frames):
        if rng.random() < 0.15:  # an empty frame on both sides
            continue
        gt_map, dt_map = np.zeros((h, w), np.int64), np.zeros((h, w), np.int64)
        classes = {}
        if rng.random() < 0.5:
            y0, x0, y1, x1 = _box(h, w, rng)
            gt_map[y0:y1, x0:x1] = IGNORE_ID
        for obj, c, (y0, x0, y1, x1) in tracks:
            if rng.random() < 0.2:
                continue  # hidden in this frame
            dy, dx = (int(v) for v in rng.integers(-1, 2, 2))
            y0, x0 = max(0, y0 + dy * t // 3), max(0, x0 + dx * t // 3)
            gt_map[y0:y1, x0:x1] = obj
            classes[obj] = c
        for obj, c in classes.items():
            if rng.random() < 0.15:
                continue  # missed
            if rng.random() < 0.1:
                pred_id[obj] += 7  # id switch from here on
            ys, xs = np.nonzero(gt_map == obj)
            if len(ys) == 0:
                continue
            sy, sx = (int(v) for v in rng.integers(-1, 2, 2))
            dc = c if rng.random() < 0.9 else 3 - c  # sometimes the wrong class
            dt_map[np.clip(ys + sy, 0, h - 1), np.clip(xs + sx, 0, w - 1)] = 1000 * dc + pred_id[obj] % 1000
        for k in range(int(rng.integers(0, 3))):  # false positives, some inside the ignore region
            y0, x0, y1, x1 = _box(h, w, rng)
            dt_map[y0:y1, x0:x1] = 1000 * int(rng.integers(1, 3)) + 900 + k
        if rng.random() < 0.3 and (gt_map == IGNORE_ID).any():
            dt_map[gt_map == IGNORE_ID] = 2950
        for obj in np.unique(gt_map[gt_map > 0]):
            cls = IGNORE_CLASS if obj == IGNORE_ID else classes[int(obj)]
            gt_rows.append((t, int(obj), cls, mask_to_rle((gt_map == obj).astype(np.uint8))))
        for obj in np.unique(dt_map[dt_map > 0]):
            dt_rows.append((t, int(obj), int(obj) // 1000, mask_to_rle((dt_map == obj).astype(np.uint8))))
    return gt_rows, dt_rows, n_frames


def _trackeval(root: Path, n_frames: dict[str, int]) -> dict:
    """TrackEval's own full pipeline (Evaluator + KittiMOTS) on the layout it expects."""
    (root / "seqmap.txt").write_text("".join(f"{s} empty 000000 {n - 1:06d}\n" for s, n in n_frames.items()))
    dataset = trackeval.datasets.KittiMOTS({
        "GT_FOLDER": str(root / "gt"), "TRACKERS_FOLDER": str(root / "trackers"),
        "SEQMAP_FILE": str(root / "seqmap.txt"), "TRACKERS_TO_EVAL": ["t"],
        "CLASSES_TO_EVAL": list(CLASSES.values()), "PRINT_CONFIG": False,
    })
    evaluator = trackeval.Evaluator({
        "USE_PARALLEL": False, "PRINT_RESULTS": False, "PRINT_CONFIG": False, "TIME_PROGRESS": False,
        "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False, "PLOT_CURVES": False, "LOG_ON_ERROR": None,
    })
    metrics = [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR({"PRINT_CONFIG": False}),
               trackeval.metrics.Identity({"PRINT_CONFIG": False})]
    with contextlib.redirect_stdout(io.StringIO()):
        res, _ = evaluator.evaluate([dataset], metrics)
    per_class = {c: res["KittiMOTS"]["t"]["COMBINED_SEQ"][c] for c in CLASSES.values()}
    mean = {m.get_name(): m.combine_classes_class_averaged({c: r[m.get_name()] for c, r in per_class.items()})
            for m in metrics}
    return {**per_class, "mean": mean}


@pytest.mark.parametrize("seed", range(60))
def test_eval_mots_equals_trackeval(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_frames = {}
    for s in range(int(rng.integers(2, 5))):
        seq = f"{s:04d}"
        gt_rows, dt_rows, n_frames[seq] = _random_sequence(rng)
        write_kitti_mots(tmp_path / "gt" / "label_02" / f"{seq}.txt", gt_rows)
        write_kitti_mots(tmp_path / "trackers" / "t" / "data" / f"{seq}.txt", dt_rows)
        if dt_rows and rng.random() < 0.2:
            dt_rows = []  # a tracker that found nothing in this sequence
            write_kitti_mots(tmp_path / "trackers" / "t" / "data" / f"{seq}.txt", [])
        if not dt_rows and rng.random() < 0.5:
            continue  # ours: no file at all
        write_kitti_mots(tmp_path / "ours" / f"{seq}.txt", dt_rows)
    (tmp_path / "ours").mkdir(exist_ok=True)
    oracle = _trackeval(tmp_path, n_frames)
    ours = evaluate_mots(tmp_path / "gt" / "label_02", tmp_path / "ours", CLASSES, ignore_class=IGNORE_CLASS)
    for name, got in [*ours["per_class"].items(), ("mean", ours["mean"])]:
        ref = oracle[name]
        for key, (metric, field) in FRACTIONS.items():
            assert got[key] == pytest.approx(float(np.mean(ref[metric][field])), abs=1e-9), (name, key)
        for key, (metric, field) in COUNTS.items():
            assert got[key] == int(ref[metric][field]), (name, key)


# Hand-computed cases: one car track over 4 frames of 10x10, masks as row bands.

def _band(y0: int, y1: int, h: int = 10) -> dict:
    m = np.zeros((h, 10), np.uint8)
    m[y0:y1] = 1
    return mask_to_rle(m)


GT = {"s": [MotsRow(t, 1001, 1, _band(0, 4)) for t in range(4)]}


def _ev(dt_rows: list[MotsRow], gt: dict | None = None) -> dict:
    return evaluate_mots_sequences(gt or GT, {"s": dt_rows}, {1: "car"})["per_class"]["car"]


def test_perfect_tracker() -> None:
    m = _ev([MotsRow(t, 1007, 1, _band(0, 4)) for t in range(4)])
    assert (m["MOTSA"], m["MOTSP"], m["sMOTSA"], m["IDF1"], m["HOTA"], m["IDSW"]) == (1.0, 1.0, 1.0, 1.0, 1.0, 0)


def test_one_id_switch() -> None:
    m = _ev([MotsRow(t, 1007 if t < 2 else 1008, 1, _band(0, 4)) for t in range(4)])
    assert m["IDSW"] == 1 and (m["TP"], m["FP"], m["FN"]) == (4, 0, 0)
    assert m["MOTSA"] == pytest.approx((4 - 0 - 1) / 4)
    assert m["IDF1"] == pytest.approx(2 * 2 / (4 + 4))  # best id covers 2 of 4 frames on both sides
    # HOTA: DetA 1; each of the 4 TPs has A = 2 / (4 + 2 - 2) = 0.5, so AssA = HOTA^2 = 0.5
    assert m["DetA"] == pytest.approx(1.0) and m["AssA"] == pytest.approx(0.5)
    assert m["HOTA"] == pytest.approx(np.sqrt(0.5))


def test_one_false_positive() -> None:
    dt = [MotsRow(t, 1007, 1, _band(0, 4)) for t in range(4)] + [MotsRow(2, 1009, 1, _band(6, 9))]
    m = _ev(dt)
    assert (m["TP"], m["FP"], m["FN"], m["IDSW"]) == (4, 1, 0, 0)
    assert m["MOTSA"] == pytest.approx((4 - 1) / 4)


def test_detection_in_ignore_region_is_not_a_false_positive() -> None:
    gt = {"s": GT["s"] + [MotsRow(2, IGNORE_ID, IGNORE_CLASS, _band(5, 10))]}
    inside = [MotsRow(t, 1007, 1, _band(0, 4)) for t in range(4)] + [MotsRow(2, 1009, 1, _band(6, 9))]
    m = _ev(inside, gt)
    assert (m["TP"], m["FP"], m["MOTSA"]) == (4, 0, 1.0)
    assert _ev(inside, GT)["FP"] == 1  # the same detection without the ignore region


def test_ignore_region_threshold_is_more_than_half() -> None:
    gt = {"s": GT["s"] + [MotsRow(2, IGNORE_ID, IGNORE_CLASS, _band(7, 10))]}
    half = [MotsRow(t, 1007, 1, _band(0, 4)) for t in range(4)] + [MotsRow(2, 1009, 1, _band(4, 10))]  # IoA 3/6
    assert _ev(half, gt)["FP"] == 1
    more = [MotsRow(t, 1007, 1, _band(0, 4)) for t in range(4)] + [MotsRow(2, 1009, 1, _band(5, 10))]  # IoA 3/5
    assert _ev(more, gt)["FP"] == 0


def test_iou_of_exactly_half_is_a_match() -> None:
    m = _ev([MotsRow(t, 1007, 1, _band(0, 2)) for t in range(4)])  # IoU 2/4 in every frame
    assert (m["TP"], m["FP"], m["FN"]) == (4, 0, 0) and m["MOTSP"] == pytest.approx(0.5)


def test_class_average_is_mean_of_classes_and_sum_of_counts() -> None:
    gt = {"s": GT["s"] + [MotsRow(t, 2001, 2, _band(5, 9)) for t in range(4)]}
    dt = [MotsRow(t, 1007, 1, _band(0, 4)) for t in range(4)]  # pedestrians all missed
    res = evaluate_mots_sequences(gt, {"s": dt}, CLASSES)
    assert res["per_class"]["pedestrian"]["MOTSA"] == 0.0
    assert res["mean"]["MOTSA"] == pytest.approx(0.5) and res["mean"]["FN"] == 4 and res["mean"]["TP"] == 4


def test_ignore_class_cannot_be_an_evaluated_class() -> None:
    with pytest.raises(InputError, match="ignore class"):
        evaluate_mots_sequences(GT, {}, {1: "car", 10: "tram"})
    gt = {"s": GT["s"] + [MotsRow(t, 10001, 10, _band(5, 9)) for t in range(4)]}
    res = evaluate_mots_sequences(gt, {}, {1: "car", 10: "tram"}, ignore_class=None)
    assert res["per_class"]["tram"]["FN"] == 4


def test_result_file_for_unknown_sequence(tmp_path: Path) -> None:
    write_kitti_mots(tmp_path / "gt" / "a.txt", [(0, 1001, 1, _band(0, 4))])
    write_kitti_mots(tmp_path / "dt" / "b.txt", [(0, 1001, 1, _band(0, 4))])
    with pytest.raises(InputError, match=r"b\.txt.*'b'"):
        evaluate_mots(tmp_path / "gt", tmp_path / "dt", {1: "car"})


def test_missing_result_file_is_empty(tmp_path: Path) -> None:
    write_kitti_mots(tmp_path / "gt" / "a.txt", [(t, 1001, 1, _band(0, 4)) for t in range(3)])
    (tmp_path / "dt").mkdir()
    m = evaluate_mots(tmp_path / "gt", tmp_path / "dt", {1: "car"})["per_class"]["car"]
    assert (m["TP"], m["FN"], m["MOTSA"]) == (0, 3, 0.0)


def test_min_gap_adds_identity_recovery() -> None:
    gt = {"s": [MotsRow(t, 1001, 1, _band(0, 4)) for t in (0, 1, 4, 5)]}
    dt = {"s": [MotsRow(t, 1007, 1, _band(0, 4)) for t in (0, 1, 4, 5)]}
    res = evaluate_mots_sequences(gt, dt, {1: "car"}, min_gap=2)
    assert (res["identity_recovery"]["events"], res["identity_recovery"]["rate"]) == (1, 1.0)
    assert "identity_recovery" not in evaluate_mots_sequences(gt, dt, {1: "car"})


def test_matched_prediction_is_kept_even_inside_an_ignore_region() -> None:
    """TrackEval only drops *unmatched* predictions; matters once a GT mask overlaps an ignore region."""
    gt = {"s": GT["s"] + [MotsRow(2, IGNORE_ID, IGNORE_CLASS, _band(1, 10))]}
    m = _ev([MotsRow(t, 1007, 1, _band(0, 4)) for t in range(4)], gt)  # IoU 1 with GT, IoA 3/4 with ignore
    assert (m["TP"], m["FN"]) == (4, 0)


def test_empty_class_counts_as_zero_unless_ignored() -> None:
    dt = {"s": [MotsRow(t, 1007, 1, _band(0, 4)) for t in range(4)]}  # no pedestrian on either side
    assert evaluate_mots_sequences(GT, dt, CLASSES)["mean"]["MOTSA"] == 0.5
    assert evaluate_mots_sequences(GT, dt, CLASSES, ignore_empty_classes=True)["mean"]["MOTSA"] == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_per_sequence_equals_each_sequence_evaluated_alone(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    gt_seqs, dt_seqs = {}, {}
    for s in range(3):
        gt_rows, dt_rows, _ = _random_sequence(rng)
        gt_seqs[f"{s:04d}"] = [MotsRow(*r) for r in gt_rows]
        dt_seqs[f"{s:04d}"] = [MotsRow(*r) for r in dt_rows]
    for empty in (False, True):
        both = evaluate_mots_sequences(gt_seqs, dt_seqs, CLASSES, ignore_class=IGNORE_CLASS,
                                       ignore_empty_classes=empty, per_sequence=True)
        assert "per_sequence" not in evaluate_mots_sequences(gt_seqs, dt_seqs, CLASSES, ignore_class=IGNORE_CLASS)
        for seq in gt_seqs:
            alone = evaluate_mots_sequences({seq: gt_seqs[seq]}, {seq: dt_seqs[seq]}, CLASSES,
                                            ignore_class=IGNORE_CLASS, ignore_empty_classes=empty)["mean"]
            assert both["per_sequence"][seq] == pytest.approx(alone, abs=1e-12, nan_ok=True)
