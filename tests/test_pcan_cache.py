"""The PCAN feature cache on the smoke video benchmark and detector: the coarse logits it stores
are the detector's own masks (pasted, they give back exactly the masks the detector output), and
training frames carry every ground-truth track's own box among their ROIs with its targets."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image

from instseg.engine.runs import load_run
from instseg.video.data.ytvis import load_ytvis_gt
from instseg.video.pcan.cache import TARGET_KEYS, cache_videos
from instseg.video.tracking.detection_cache import frame_truth


def test_cache_keeps_the_detectors_own_masks_and_the_training_rois(smoke_video_dir: Path, smoke_runs_dir: Path) -> None:
    detector, spec = load_run(smoke_runs_dir / "frcnn")
    gt = load_ytvis_gt(smoke_video_dir / "annotations" / "train.json")
    video_id = sorted(v["id"] for v in gt["videos"])[0]
    (video,) = cache_videos(detector, spec.label_to_category_id, gt, smoke_video_dir / "frames", [video_id],
                            training=True)
    truth = frame_truth(gt, video_id, with_masks=True)
    assert len(video) == len(truth)
    for frame, frame_gt in zip(video.frames, truth):
        det = frame.detections
        assert set(frame.levels) == {"0", "1", "2", "3"} and frame.levels["0"].dtype == torch.float16
        if len(det):
            pasted = paste_masks_in_image(frame.detection_logits.float().sigmoid()[:, None], det.boxes,
                                          video.size)[:, 0] >= 0.5
            assert (pasted != det.masks).float().mean() < 1e-3  # float16 logits: a rare pixel at 0.5 may flip
        for track, row in frame.truth_rois.items():
            assert int(frame.roi_track_ids[row]) == track
            k = int(torch.nonzero(frame_gt.track_ids == track)[0])
            torch.testing.assert_close(frame.rois[row], frame_gt.boxes[k])
            assert frame_gt.masks[k].any() == frame.targets["mask"][row].any()
        assert len(frame.rois) == len(frame.roi_logits) == len(frame.roi_track_ids)
        assert all(frame.targets[key].shape == (len(frame.rois), 28, 28) for key in TARGET_KEYS)
