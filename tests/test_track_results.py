"""A tracker's per-frame output as YouTube-VIS results and KITTI-MOTS rows: the category vote,
the per-track score, frames without the track, and the overlap rule of MOTS."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from instseg.video.data.track_results import TrackedVideo


def _frame(masks: list[tuple[slice, slice]], labels: list[int], scores: list[float], size: int = 16) -> dict:
    m = torch.zeros((len(masks), size, size), dtype=torch.bool)
    for k, (rows, cols) in enumerate(masks):
        m[k, rows, cols] = True
    return {"masks": m, "labels": torch.tensor(labels, dtype=torch.int64),
            "scores": torch.tensor(scores, dtype=torch.float32), "boxes": torch.zeros((len(masks), 4))}


def _decode(rle: dict) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def _tracked(frames: list[tuple[dict, torch.Tensor]]) -> TrackedVideo:
    video = TrackedVideo()
    for detections, ids in frames:
        video.add(detections, ids)
    return video


@pytest.fixture()
def frames() -> list[tuple[dict, torch.Tensor]]:
    a, b = (slice(2, 8), slice(2, 8)), (slice(5, 12), slice(5, 12))
    return [
        (_frame([a, b], [1, 2], [0.9, 0.6]), torch.tensor([5, 9])),
        (_frame([a, b], [3, 2], [0.2, 0.8]), torch.tensor([5, -1])),   # track 9 not output here
        (_frame([b], [2], [0.7]), torch.tensor([9])),
    ]


def test_category_is_the_score_weighted_vote_and_score_the_mean(frames) -> None:
    categories = _tracked(frames).categories()
    assert categories[5] == (1, pytest.approx((0.9 + 0.2) / 2))  # 0.9 for category 1 beats 0.2 for 3
    assert categories[9] == (2, pytest.approx((0.6 + 0.7) / 2))


def test_ytvis_results_hold_one_rle_or_none_per_frame(frames) -> None:
    records = {r["track_id"]: r for r in _tracked(frames).ytvis_results(42)}
    assert set(records) == {5, 9}
    assert all(r["video_id"] == 42 for r in records.values())
    assert records[9]["segmentations"][1] is None and len(records[9]["segmentations"]) == 3
    np.testing.assert_array_equal(_decode(records[5]["segmentations"][1]), frames[1][0]["masks"][0].numpy())


def test_mots_rows_renumber_tracks_and_give_overlaps_to_the_higher_score(frames) -> None:
    rows = _tracked(frames).mots_rows()
    assert [(t, obj, cls) for t, obj, cls, _ in rows] == [(0, 1001, 1), (0, 2002, 2), (1, 1001, 1), (2, 2002, 2)]
    first, second = _decode(rows[0][3]), _decode(rows[1][3])
    assert not (first & second).any()
    assert first.sum() == 36 and second.sum() == 49 - 9  # the 3x3 overlap went to the 0.9 detection
    assert _decode(rows[3][3]).sum() == 49


def test_a_mask_fully_covered_by_a_higher_score_is_dropped() -> None:
    a = (slice(2, 10), slice(2, 10))
    frames = [(_frame([a, (slice(3, 5), slice(3, 5))], [1, 1], [0.9, 0.5]), torch.tensor([1, 2]))]
    assert [row[1] for row in _tracked(frames).mots_rows()] == [1001]
