"""The mask-IoU tracker (no appearance): identities through crossings and gaps, track birth and
death, and its mask helpers against pycocotools."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from instseg.errors import InputError
from instseg.video.models.trackers import MaskIoUConfig, MaskIoUTracker, QuasiDenseTracker, Tracker
from instseg.video.models.trackers.iou import mask_iou, shift_mask

SIZE = 64


def _frame(objects):
    """Detections from (x, y, score, label) squares of side 10 on a 64x64 frame."""
    boxes = torch.tensor([[x, y, x + 10, y + 10] for x, y, _, _ in objects], dtype=torch.float32).reshape(-1, 4)
    masks = torch.zeros(len(objects), SIZE, SIZE, dtype=torch.bool)
    for m, (x, y, _, _) in zip(masks, objects):
        m[y:y + 10, x:x + 10] = True
    return {"boxes": boxes, "scores": torch.tensor([o[2] for o in objects], dtype=torch.float32),
            "labels": torch.tensor([o[3] for o in objects], dtype=torch.int64), "masks": masks}


def test_trackers_share_the_contract():
    assert issubclass(MaskIoUTracker, Tracker) and issubclass(QuasiDenseTracker, Tracker)


def test_crossing_objects_with_swapped_scores_keep_ids():
    """A moves right, B left, through each other (same category, overlapping rows); halfway their
    scores swap and the detector lists them in the other order."""
    tracker = MaskIoUTracker()
    trail = {"A": [], "B": []}
    for t in range(12):
        a, b = (4 + 4 * t, 20), (48 - 4 * t, 24)
        sa, sb = (0.9, 0.75) if t < 6 else (0.75, 0.9)
        if t % 2:
            ids = tracker.update(_frame([(*b, sb, 1), (*a, sa, 1)])).tolist()[::-1]
        else:
            ids = tracker.update(_frame([(*a, sa, 1), (*b, sb, 1)])).tolist()
        trail["A"].append(ids[0])
        trail["B"].append(ids[1])
    assert trail == {"A": [1] * 12, "B": [2] * 12}


def test_static_object_keeps_id_through_gap_up_to_max_age():
    """No appearance: after a gap the object is matched by where its last mask was."""
    def run(gap):
        tracker = MaskIoUTracker(MaskIoUConfig(max_age=3))
        ids = [tracker.update(_frame([(20, 20, 0.9, 1)])).item() for _ in range(2)]
        ids += [tracker.update(_frame([])).numel() for _ in range(gap)]
        return ids + [tracker.update(_frame([(21, 20, 0.9, 1)])).item()]
    assert run(3) == [1, 1, 0, 0, 0, 1]
    assert run(4) == [1, 1, 0, 0, 0, 0, 2]  # dropped after more than max_age frames: a new id


@pytest.mark.parametrize("predict_motion, expected", [(True, 1), (False, 2)])
def test_motion_prediction_bridges_gap_of_moving_object(predict_motion, expected):
    tracker = MaskIoUTracker(MaskIoUConfig(predict_motion=predict_motion))
    for t in range(3):
        assert tracker.update(_frame([(2 + 5 * t, 30, 0.9, 1)])).item() == 1
    for _ in range(3):
        tracker.update(_frame([]))
    # at 5 px per frame, frame 6 puts it at x = 32: the last mask (x = 12) no longer overlaps it
    assert tracker.update(_frame([(32, 30, 0.9, 1)])).item() == expected


def test_new_object_new_id_and_ids_never_reused():
    tracker = MaskIoUTracker(MaskIoUConfig(max_age=1))
    assert tracker.update(_frame([(5, 5, 0.9, 1)])).tolist() == [1]
    assert tracker.update(_frame([(5, 5, 0.9, 1), (40, 40, 0.8, 1)])).tolist() == [1, 2]
    assert tracker.update(_frame([(5, 5, 0.9, 2)])).tolist() == [3]  # same place, other category
    for _ in range(3):  # every track dies
        tracker.update(_frame([]))
    assert tracker.update(_frame([(40, 40, 0.8, 1), (5, 5, 0.9, 1)])).tolist() == [4, 5]
    tracker.reset()
    assert tracker.update(_frame([(40, 40, 0.8, 1)])).tolist() == [1]


def test_low_scores_never_start_tracks_but_may_continue_them():
    tracker = MaskIoUTracker()
    assert tracker.update(_frame([(5, 5, 0.69, 1), (40, 40, 0.9, 1)])).tolist() == [-1, 1]
    assert tracker.update(_frame([(5, 5, 0.69, 1), (40, 40, 0.5, 1)])).tolist() == [-1, 1]  # >= 0.3 continues
    assert tracker.update(_frame([(40, 40, 0.29, 1)])).tolist() == [-1]  # below the object score: ignored
    assert tracker.update(_frame([(40, 40, 0.7, 1)])).tolist() == [1]  # the track survived the miss


def test_matching_is_optimal_not_greedy():
    """Detection 0 overlaps track 1 by IoU 0.82 and track 2 by 0.54; detection 1 overlaps track 1
    by 0.67 and track 2 by 0.25 (< 0.3): greedy takes 0->1 and leaves 1 to start a track,
    Hungarian gives 0->2, 1->1."""
    tracker = MaskIoUTracker(MaskIoUConfig(predict_motion=False))
    tracker.update(_frame([(20, 20, 0.9, 1), (24, 20, 0.9, 1)]))
    assert tracker.update(_frame([(21, 20, 0.9, 1), (18, 20, 0.9, 1)])).tolist() == [2, 1]


def test_config_and_input_errors():
    assert MaskIoUConfig.from_dict({"max_age": 4}) == MaskIoUConfig(max_age=4)
    with pytest.raises(InputError, match="tracker.mask_iou.*max_agee"):
        MaskIoUConfig.from_dict({"max_agee": 4})
    frame = _frame([(5, 5, 0.9, 1)])
    frame["masks"] = frame["masks"][:0]
    with pytest.raises(InputError, match="frame 0.*masks"):
        MaskIoUTracker().update(frame)


def test_shift_mask_translates_and_crops():
    mask = torch.zeros(5, 6, dtype=torch.bool)
    mask[1, 1] = mask[4, 5] = True
    moved = shift_mask(mask, 2, -1)
    assert torch.nonzero(moved).tolist() == [[0, 3]]  # (4, 5) left the frame
    assert not shift_mask(mask, 6, 0).any() and torch.equal(shift_mask(mask, 0, 0), mask)


def test_mask_iou_equals_pycocotools():
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(50):
        a = rng.random((3, 16, 16)) < rng.random()
        b = rng.random((4, 16, 16)) < rng.random()
        a[0] = False  # an empty mask
        ours = mask_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
        rle = [mask_utils.encode(np.asfortranarray(m.transpose(1, 2, 0).astype(np.uint8))) for m in (a, b)]
        ref = mask_utils.iou(rle[0], rle[1], [0] * len(b))
        worst = max(worst, float(np.abs(ours - ref).max()))
    assert worst < 1e-6


def test_duplicates_of_one_object_are_linked_once_whatever_their_label():
    """Two boxes of one object (IoU 0.82, different categories) start one track, not two: the same
    class-agnostic duplicate removal (box IoU > 0.7) as the embedding tracker's; off at 1."""
    duplicates = _frame([(20, 20, 0.9, 1), (21, 20, 0.8, 2)])
    assert MaskIoUTracker().update(duplicates).tolist() == [1, -1]
    assert MaskIoUTracker(MaskIoUConfig(duplicate_iou=1.0)).update(duplicates).tolist() == [1, 2]
    apart = _frame([(20, 20, 0.9, 1), (24, 20, 0.8, 2)])  # IoU 0.43: two objects
    assert MaskIoUTracker().update(apart).tolist() == [1, 2]
