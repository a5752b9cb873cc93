"""The motion-shortcut diagnostic on hand-built tracks: constant velocity through an occlusion is
solved, a reversal is not, a look-alike nearer the guess steals it, and gaps that are not full
occlusions (out of frame) or are too short are no events."""

from __future__ import annotations

import pytest

from instseg.video.data.motion_diagnostic import motion_shortcut, occlusion_events

MASK = {"size": [1, 1], "counts": "1"}  # any non-null marker: the diagnostic reads boxes only


def _track(track_id: int, xs: list[float | None], hidden: set[int], width: float = 10.0) -> dict:
    """A track of 10x10 boxes at x positions ``xs`` (None: out of the frame); ``hidden`` frames are
    in the frame but fully occluded."""
    boxes = [None if x is None or t in hidden else [x, 20.0, width, 10.0] for t, x in enumerate(xs)]
    return {"id": track_id, "video_id": 1, "track_id": track_id, "category_id": 1,
            "segmentations": [None if b is None else MASK for b in boxes], "bboxes": boxes,
            "amodal_segmentations": [None if x is None else MASK for x in xs],
            "amodal_bboxes": [None if x is None else [x, 20.0, width, 10.0] for x in xs]}


def test_constant_velocity_through_an_occlusion_is_solved() -> None:
    track = _track(1, [0, 3, 6, 9, 12, 15, 18], hidden={2, 3, 4})
    assert occlusion_events(track, 3) == [(1, 5)]
    result = motion_shortcut({"annotations": [track]}, 3)
    assert result["events"] == 1 and result["solved"] == 1.0 and result["ious"] == [pytest.approx(1.0)]


def test_a_reversal_is_not_solved() -> None:
    track = _track(1, [0, 6, 6, 6, 0, -6, -12], hidden={2, 3, 4})
    result = motion_shortcut({"annotations": [track]}, 3)
    # guess x = 6 + 6 * 4 = 30, true -6: no overlap
    assert result["solved"] == 0.0 and result["ious"] == [0.0]


def test_a_look_alike_nearer_the_guess_takes_the_event() -> None:
    track = _track(1, [0, 3, 6, 9, 12, 14, 18], hidden={2, 3, 4})  # true box at 14: IoU 0.82 with the guess at 15
    decoy = _track(2, [15] * 7, hidden=set())  # exactly at the guess
    result = motion_shortcut({"annotations": [track, decoy]}, 3)
    assert result["events"] == 1 and result["solved"] == 0.0 and result["nearest_only"] == 0.0


def test_leaving_the_frame_and_short_gaps_are_no_events() -> None:
    outside = _track(1, [0, 3, None, None, None, 15, 18], hidden=set())
    short = _track(2, [0, 3, 6, 9, 12, 15, 18], hidden={3, 4})
    assert occlusion_events(outside, 1) == [] and occlusion_events(short, 3) == []
    assert motion_shortcut({"annotations": [outside, short]}, 3)["events"] == 0
    assert motion_shortcut({"annotations": [short]}, 2)["events"] == 1


def test_amodal_boxes_are_the_oracle_bound() -> None:
    track = _track(1, [0, 3, 6, 9, 12, 15, 18], hidden={2, 3, 4})
    track["bboxes"][1] = [3.0, 20.0, 4.0, 10.0]  # a sliver: the object sliding behind its occluder
    assert motion_shortcut({"annotations": [track]}, 3, "amodal_bboxes")["solved"] == 1.0
    assert motion_shortcut({"annotations": [track]}, 3)["solved"] == 0.0
