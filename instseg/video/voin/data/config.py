"""What decides a VOI split: clip length, which targets qualify, how occluders move and how much they cover."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from instseg.errors import InputError
from instseg.video.voin.params import voin_config


@dataclass(frozen=True)
class VoiConfig:
    """Settings of one VOI construction (stored in the index JSON). Defaults: the cpu scale.

    Fractions are per frame, of the target's amodal area inside the frame."""

    clip_length: int = 12  # frames per sample: VOIN trains on short clips, and 12 keeps a sample small
    clip_stride: int = 10  # candidate clip starts: 0, stride, 2*stride, ... (overlapping clips allowed)
    min_area: int = 150  # px, target's amodal area in the frame, every clip frame
    min_occluded: float = 0.15  # synthetic: every clip frame's occluded fraction lies in [min, max]
    max_occluded: float = 0.7
    natural_min_occluded: float = 0.1  # natural: at least natural_min_frames frames this occluded ...
    natural_min_frames: int = 3
    natural_min_visible_frames: int = 8  # ... and this many frames with some of the target visible
    synthetic_per_video: int = 4
    natural_per_video: int = 2
    object_occluder_rate: float = 0.5  # object-shaped (from another video) vs Bezier blob
    source_look_rate: float = 0.5  # occluder colours from a source-video object vs a random look
    occluder_scale: tuple[float, float] = (0.6, 1.2)  # occluder radius / target's mean radius
    max_relative_speed: float = 2.0  # px/frame, occluder velocity relative to the target's mean velocity
    accel_std: float = 0.15  # px/frame^2, AR(1) acceleration (the generator's path model)
    scale_amplitude: float = 0.15  # log-radius oscillation
    max_spin: float = 0.06  # rad/frame
    blob_points: tuple[int, int] = (5, 9)  # Bezier control points of a blob
    gain_drift: float = 0.08  # illumination drift of the occluder, as the generator's objects
    texture_drift: float = 0.15
    placement_tries: int = 60

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> "VoiConfig":
        return voin_config(cls, params, "voi")

    def check(self) -> None:
        if self.clip_length < 2 or self.clip_stride < 1:
            raise InputError("clip_length must be >= 2 and clip_stride >= 1", record="voi")
        if not 0.0 <= self.min_occluded <= self.max_occluded <= 1.0:
            raise InputError(f"need 0 <= min_occluded <= max_occluded <= 1, got {self.min_occluded}, "
                             f"{self.max_occluded}", record="voi")
        if self.placement_tries < 1:
            raise InputError("placement_tries must be >= 1", record="voi")
