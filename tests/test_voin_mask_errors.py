"""The robustness study's wrong masks and the end-to-end study's tracked ones: holes grown, shifted and
dropped as stated and always inside the amodal mask, the told visible part coherent, the target matched
to the track that overlaps it, a missed target kept (empty) rather than dropped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instseg.errors import InputError
from instseg.video.voin.data.samples import VoiSample
from instseg.video.voin.mask_errors import condition_names, corrupt_masks, dilate_hole, drop_hole, shift_hole
from instseg.video.voin.tracked_masks import TrackedTarget, match_target, mean_iou, predict_tracked_amodal, \
    tracked_sample


def _sample(length: int = 4, size: int = 48) -> VoiSample:
    clean = np.full((length, size, size, 3), 90, np.uint8)
    amodal = np.zeros((length, size, size), bool)
    amodal[:, 8:40, 8:40] = True
    occluder = np.zeros_like(amodal)
    occluder[:, 20:30, 20:30] = True
    corrupted = clean.copy()
    corrupted[occluder] = 200
    return VoiSample(corrupted, clean, amodal, amodal & occluder, occluder, amodal & ~occluder,
                     {"kind": "synthetic", "video_id": 3, "track_id": 2, "start": 0, "length": length})


def test_dilation_grows_the_hole_by_a_disc_inside_the_amodal_mask():
    s = _sample()
    grown = dilate_hole(s.occluded, s.amodal, 4)
    assert grown[0, 20:30, 16:34].all() and not grown[0, 20:30, 15].any()  # 4 px left and right, no more
    assert not grown[0, 16, 16]  # a disc, not a square: the corner (4, 4) away stays out
    wide = dilate_hole(s.occluded, s.amodal, 14)
    assert not (wide & ~s.amodal).any() and wide[0, 8, 25]  # clipped at the amodal border
    assert (dilate_hole(s.occluded, s.amodal, 0) == s.occluded).all()
    with pytest.raises(InputError, match=">= 0"):
        dilate_hole(s.occluded, s.amodal, -1)


def test_shift_and_drop_by_hand():
    s = _sample()
    right = shift_hole(s.occluded, s.amodal, 5, 0.0)
    assert right[0, 20:30, 25:35].all() and right.sum() == s.occluded.sum()
    up = shift_hole(s.occluded, s.amodal, 14, -np.pi / 2)
    assert up[0, 8:16, 20:30].all() and not up[0, 6:8].any()  # 20-14 = 6: clipped to the amodal rows from 8
    dropped = drop_hole(s.occluded)
    assert dropped[0].any() and not dropped[1].any() and dropped[2].any() and not dropped[3].any()


def test_told_masks_are_coherent_and_the_true_condition_is_the_sample_itself():
    s = _sample()
    same = corrupt_masks(s, "dilate_0")
    assert (same.visible == s.visible).all() and (same.occluded == s.occluded).all()
    for condition in condition_names([8, 0], ["shift", "drop"]):
        told = corrupt_masks(s, condition)
        assert not (told.occluded & told.visible).any() and not (told.occluded & ~s.amodal).any()
        assert ((told.visible | told.occluded) == s.amodal).all()
        assert (told.clean == s.clean).all() and (told.amodal == s.amodal).all()
    assert condition_names([8, 0], ["shift"]) == ["dilate_0", "dilate_8", "shift"]
    # the shift's direction is fixed per sample: the same for every method and seed
    assert (corrupt_masks(s, "shift").occluded == corrupt_masks(s, "shift").occluded).all()
    assert (s.occluded == _sample().occluded).all()  # the sample itself is untouched
    with pytest.raises(InputError, match="video 3 track 2.*unknown mask condition"):
        corrupt_masks(s, "blur")


def test_mean_iou_and_matching_the_target_track():
    s = _sample()
    assert mean_iou(s.visible, s.visible) == 1.0 and mean_iou(np.zeros_like(s.visible), np.zeros_like(s.visible)) == 0
    half = s.visible.copy()
    half[2:] = False  # two frames of four found, exactly
    assert mean_iou(half, s.visible) == pytest.approx(0.5)
    other = np.zeros_like(s.visible)
    other[:, 0:5, 0:5] = True
    target = match_target({7: (other, [1, 1]), 9: (half, [4, 4, 2])}, s.visible)
    assert target.category == 4 and target.iou == pytest.approx(0.5) and not target.missed
    assert (target.visible == half).all()
    missed = match_target({7: (other, [1])}, s.visible)
    assert missed.missed and not missed.visible.any()
    assert match_target({}, s.visible).missed


def test_tracked_sample_and_a_missed_target_keeps_empty_masks():
    s = _sample()
    amodal = s.amodal.copy()
    amodal[:, 8:12] = False
    told = tracked_sample(s, s.visible, amodal)
    assert ((told.occluded | told.visible) == told.amodal).all() and not (told.occluded & told.visible).any()
    assert (told.clean == s.clean).all() and s.amodal[:, 8:12, 8:40].all()  # the sample untouched

    class Never(torch.nn.Module):
        def forward(self, *args):
            raise AssertionError("no shape prediction for a missed target")

    empty = TrackedTarget(np.zeros_like(s.visible), 0, 0.0)
    assert not predict_tracked_amodal(Never(), empty, 16, 0.25).any()
