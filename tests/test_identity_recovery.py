"""Identity recovery after full occlusion: hand cases, and its matching checked against TrackEval's CLEAR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from instseg.data.coco_json import mask_to_rle
from instseg.errors import InputError
from instseg.video.data.kitti_mots import MotsRow, write_kitti_mots
from instseg.video.evaluation.mots import evaluate_mots_sequences
from instseg.video.evaluation.recovery import (
    class_frames, clear_matches, identity_recovery, identity_recovery_dirs, sequence_length,
)
from test_mots_eval import CLASSES, _random_sequence


def _band(y0: int, y1: int) -> dict:
    m = np.zeros((10, 10), np.uint8)
    m[y0:y1] = 1
    return mask_to_rle(m)


A, B, EMPTY = _band(0, 4), _band(6, 10), _band(0, 0)
SEEN = (0, 1, 5, 6)  # GT 1001 is hidden in frames 2, 3, 4


def _gt(frames=SEEN) -> dict:
    return {"s": [MotsRow(t, 1001, 1, A) for t in frames]}


def _run(dt: list[MotsRow], gt: dict | None = None, min_gap: int = 3, grace: int = 3) -> dict:
    return identity_recovery(gt or _gt(), {"s": dt}, min_gap, grace)


def test_recovered() -> None:
    r = _run([MotsRow(t, 1007, 1, A) for t in SEEN])
    assert (r["events"], r["recovered"], r["rate"]) == (1, 1, 1.0)
    e = r["per_event"][0]
    assert (e["seq"], e["gt_id"], e["hidden"], e["before"], e["after"]) == ("s", 1001, (2, 4), (1, 1007), (5, 1007))


def test_swapped() -> None:
    r = _run([MotsRow(t, 1007 if t < 2 else 1008, 1, A) for t in SEEN])
    assert (r["events"], r["recovered"], r["swapped"], r["rate"]) == (1, 0, 1, 0.0)


def test_missed_after_gap_and_grace_window() -> None:
    gt = _gt((0, 1, 5, 6, 7, 8, 9))
    late = [MotsRow(t, 1007, 1, A) for t in (0, 1, 8, 9)]  # back only 3 frames after reappearing at 5
    r = _run(late, gt)
    assert (r["events"], r["missed"], r["recovered"], r["rate"]) == (1, 1, 0, 0.0)
    assert _run(late, gt, grace=4)["recovered"] == 1
    assert _run([MotsRow(t, 1007, 1, A) for t in (0, 1, 7)], gt)["recovered"] == 1  # last frame of the window


def test_gap_shorter_than_min_gap_is_no_event() -> None:
    dt = [MotsRow(t, 1007 if t < 2 else 1008, 1, A) for t in SEEN]
    assert _run(dt, min_gap=4)["events"] == 0 and _run(dt, min_gap=4)["rate"] is None
    assert _run(dt, min_gap=3)["events"] == 1


def test_never_matched_before_gap_is_left_out_of_the_rate() -> None:
    r = _run([MotsRow(t, 1007, 1, A) for t in (5, 6)])
    assert (r["events"], r["never_matched"], r["rate"]) == (0, 1, None)


def test_empty_visible_mask_counts_as_hidden() -> None:
    gt = {"s": _gt()["s"] + [MotsRow(t, 1001, 1, EMPTY) for t in (2, 3, 4)]}
    r = _run([MotsRow(t, 1007, 1, A) for t in SEEN], gt)
    assert (r["events"], r["recovered"]) == (1, 1)


def test_match_needs_iou_half_and_same_class() -> None:
    wrong_class = [MotsRow(t, 1007, 1, A) for t in (0, 1)] + [MotsRow(t, 2007, 2, A) for t in (5, 6)]
    assert _run(wrong_class)["missed"] == 1
    poor = [MotsRow(t, 1007, 1, A) for t in (0, 1)] + [MotsRow(t, 1007, 1, _band(0, 1)) for t in (5, 6)]  # IoU 1/4
    assert _run(poor)["missed"] == 1


def test_two_objects_trading_ids() -> None:
    gt = {"s": [MotsRow(t, 1001, 1, A) for t in SEEN] + [MotsRow(t, 1002, 1, B) for t in SEEN]}
    dt = [MotsRow(t, 1007, 1, A if t < 2 else B) for t in SEEN] + [MotsRow(t, 1008, 1, B if t < 2 else A) for t in SEEN]
    r = _run(dt, gt)
    assert (r["events"], r["swapped"]) == (2, 2)


def test_dirs_and_unknown_sequence(tmp_path: Path) -> None:
    write_kitti_mots(tmp_path / "gt" / "s.txt", _gt()["s"])
    write_kitti_mots(tmp_path / "dt" / "s.txt", [MotsRow(t, 1007, 1, A) for t in SEEN])
    assert identity_recovery_dirs(tmp_path / "gt", tmp_path / "dt", min_gap=3)["rate"] == 1.0
    write_kitti_mots(tmp_path / "dt" / "x.txt", [])
    with pytest.raises(InputError, match=r"x\.txt"):
        identity_recovery_dirs(tmp_path / "gt", tmp_path / "dt", min_gap=3)
    with pytest.raises(InputError, match="min_gap"):
        identity_recovery(_gt(), {}, min_gap=0)
    with pytest.raises(InputError, match="sequence 's'.*negative frame index -1"):
        identity_recovery(_gt((-1, 0)), {}, min_gap=1)


@pytest.mark.parametrize("seed", range(20))
def test_matching_reproduces_trackeval_idsw(seed: int) -> None:
    """Counting id switches on clear_matches' pairs must give TrackEval CLEAR's IDSW (via evaluate_mots)."""
    rng = np.random.default_rng(seed)
    gt_seqs, dt_seqs = {}, {}
    for s in range(3):
        gt_rows, dt_rows, _ = _random_sequence(rng)
        gt_seqs[f"{s}"] = [MotsRow(*r) for r in gt_rows]
        dt_seqs[f"{s}"] = [MotsRow(*r) for r in dt_rows]
    reference = evaluate_mots_sequences(gt_seqs, dt_seqs, CLASSES)["per_class"]
    for class_id, name in CLASSES.items():
        switches = 0
        for seq in gt_seqs:
            n = sequence_length(seq, gt_seqs[seq], dt_seqs[seq])
            last: dict[int, int] = {}
            for frame in clear_matches(class_frames(gt_seqs[seq], dt_seqs[seq], class_id, n)):
                switches += sum(g in last and last[g] != d for g, d in frame.items())
                last.update(frame)
        assert switches == reference[name]["IDSW"]


def test_tie_at_iou_half_keeps_the_previous_frames_id() -> None:
    """Two predictions with IoU exactly 0.5 each: CLEAR prefers the id matched in the previous frame."""
    top, bottom = _band(0, 2), _band(2, 4)
    gt = {"s": [MotsRow(t, 1001, 1, A) for t in (0, 1)]}
    dt = [MotsRow(0, 1008, 1, bottom), MotsRow(1, 1007, 1, top), MotsRow(1, 1008, 1, bottom)]
    assert clear_matches(class_frames(gt["s"], dt, 1, 2)) == [{1001: 1008}, {1001: 1008}]
    assert evaluate_mots_sequences(gt, {"s": dt}, {1: "car"})["per_class"]["car"]["IDSW"] == 0
