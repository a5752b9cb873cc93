"""Video object inpainting (VOI) samples from OccludedShapes-VIS, as VOIN's YouTube-VOI (section 5.4.4).

``samples``: one target over a clip, corrupted by a pasted synthetic occluder (``occluders``,
placed by ``placement``, painted with the benchmark's own noise, ``noise``) or by its natural
occluders (clean ground truth re-rendered with the target in front). ``builder`` plans and writes
a split, ``store`` reads and writes samples and the index, ``leak`` checks that a pasted hole is
not recognisable by its noise.
"""

from __future__ import annotations

from instseg.video.voin.data.builder import SampleSpec, build_voi_split, eligible_clips, make_sample, plan_samples
from instseg.video.voin.data.config import VoiConfig
from instseg.video.voin.data.leak import NoiseMatch, leak_diagnostic, noise_match, split_leak_report
from instseg.video.voin.data.occluders import Occluder, bezier_outline, occluder_poses
from instseg.video.voin.data.placement import PlacementError, coverage, place_occluder
from instseg.video.voin.data.samples import VoiSample, front_scene, natural_sample, synthetic_sample
from instseg.video.voin.data.store import iter_samples, read_index, read_sample, write_index, write_sample

__all__ = ["SampleSpec", "build_voi_split", "eligible_clips", "make_sample", "plan_samples", "VoiConfig",
           "NoiseMatch", "leak_diagnostic", "noise_match", "split_leak_report", "Occluder", "bezier_outline",
           "occluder_poses", "PlacementError", "coverage", "place_occluder", "VoiSample", "front_scene",
           "natural_sample", "synthetic_sample", "iter_samples", "read_index", "read_sample", "write_index",
           "write_sample"]
