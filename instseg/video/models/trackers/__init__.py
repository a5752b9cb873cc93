"""Trackers for tracking by detection: a mask-IoU baseline with no appearance (``iou``) and
QDTrack's quasi-dense embedding tracker (``quasi_dense``), with the embedding head and its loss
(``embedding``). All share the update/reset contract of ``base.Tracker``."""

from __future__ import annotations

from instseg.video.models.trackers.base import Tracker
from instseg.video.models.trackers.iou import MaskIoUConfig, MaskIoUTracker
from instseg.video.models.trackers.quasi_dense import QuasiDenseConfig, QuasiDenseTracker

__all__ = ["MaskIoUConfig", "MaskIoUTracker", "QuasiDenseConfig", "QuasiDenseTracker", "Tracker"]
