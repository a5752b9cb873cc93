"""Video inference on a frozen image detector: the detections are exactly the detector's own,
the hooked ROI features equal a direct RoIAlign of its FPN levels, batching changes nothing, and
``track_frames`` hands the tracker what it needs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torchvision.models.detection.transform import resize_boxes

from instseg.models.detectors import build_detector, detector_parts
from instseg.video.models.inference import detect_frames, embedding_pooler, track_frames

LABEL_TO_CATEGORY = {k: 10 + k for k in range(1, 4)}


@pytest.fixture(scope="module")
def detector() -> nn.Module:
    torch.manual_seed(0)
    model = build_detector("frcnn", 3, "fcn", {"conv_channels": 8}, fpn_channels=8, min_size=48, max_size=48,
                           box_score_thresh=0.0, box_detections_per_img=6)
    return model.eval()


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(3)]


def _tensor(frame: np.ndarray) -> Tensor:
    return torch.from_numpy(frame.astype(np.float32)).permute(2, 0, 1) / 255


def test_detections_are_the_detectors_own(detector: nn.Module, frames: list[np.ndarray]) -> None:
    with torch.no_grad():
        direct = detector([_tensor(f) for f in frames])
    got = list(detect_frames(detector, frames, LABEL_TO_CATEGORY, batch_size=2))
    assert len(got) == 3 and sum(len(d) for d in got) > 0
    for det, want in zip(got, direct):
        torch.testing.assert_close(det.boxes, want["boxes"])
        torch.testing.assert_close(det.scores, want["scores"])
        assert det.labels.tolist() == [10 + int(v) for v in want["labels"]]
        torch.testing.assert_close(det.masks, want["masks"][:, 0] >= 0.5)
        assert det.masks.shape[-2:] == (40, 56) and det.roi_features is None


def test_roi_features_equal_a_direct_roi_align_and_batching_changes_nothing(detector: nn.Module,
                                                                            frames: list[np.ndarray]) -> None:
    extra = [torch.tensor([[1.0, 2.0, 30.0, 20.0]]) for _ in frames]
    batched = list(detect_frames(detector, frames, LABEL_TO_CATEGORY, with_features=True, batch_size=3,
                                 extra_boxes=extra))
    single = list(detect_frames(detector, frames, LABEL_TO_CATEGORY, with_features=True, batch_size=1,
                                extra_boxes=extra))
    transform, backbone, _ = detector_parts(detector)
    pooler = embedding_pooler(detector)
    for k, (det, one) in enumerate(zip(batched, single)):
        assert det.roi_features.shape == (len(det) + 1, 8, 7, 7)
        torch.testing.assert_close(det.roi_features, one.roi_features, atol=1e-5, rtol=1e-4)
        with torch.no_grad():
            images, _ = transform([_tensor(frames[k])])
            features = backbone(images.tensors)
            boxes = resize_boxes(torch.cat([det.boxes, extra[k]]), [40, 56], list(images.image_sizes[0]))
            want = pooler(features, [boxes], images.image_sizes)
        torch.testing.assert_close(one.roi_features, want, atol=1e-5, rtol=1e-4)


class _Recorder:
    """A tracker that numbers detections and keeps what it was given."""

    def __init__(self) -> None:
        self.resets, self.inputs = 0, []

    def reset(self) -> None:
        self.resets += 1

    def update(self, detections: dict) -> Tensor:
        self.inputs.append(detections)
        return torch.arange(len(detections["scores"]), dtype=torch.int64) + 1


def test_track_frames_embeds_the_detections_only(detector: nn.Module, frames: list[np.ndarray]) -> None:
    extra = [torch.tensor([[1.0, 2.0, 30.0, 20.0]]) for _ in frames]
    dets = list(detect_frames(detector, frames, LABEL_TO_CATEGORY, with_features=True, extra_boxes=extra))
    head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 49, 4))
    tracker = _Recorder()
    out = list(track_frames(dets, tracker, head))
    assert tracker.resets == 1 and len(out) == 3
    for (det, ids), given in zip(out, tracker.inputs):
        assert given["embeddings"].shape == (len(det), 4)
        assert ids.tolist() == list(range(1, len(det) + 1))
    with pytest.raises(ValueError, match="ROI features"):
        list(track_frames(list(detect_frames(detector, frames[:1], LABEL_TO_CATEGORY)), _Recorder(), head))
