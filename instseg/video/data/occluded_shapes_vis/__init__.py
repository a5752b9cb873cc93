"""OccludedShapes-VIS: the video counterpart of the OccludedShapes image benchmark (same renderer,
categories, appearance model and object statistics), with exact masks, depths and flow per frame.

``build`` writes a benchmark; ``render`` and ``flow`` recompute everything from a stored scene.
"""

from __future__ import annotations

from instseg.video.data.occluded_shapes_vis.build import (
    SMOKE,
    VideoBenchmarkConfig,
    build_video_benchmark,
    generate_video,
    load_scenes,
    video_statistics,
)
from instseg.video.data.occluded_shapes_vis.flow import flow
from instseg.video.data.occluded_shapes_vis.render import frame_masks, object_layer, render_frame

__all__ = ["SMOKE", "VideoBenchmarkConfig", "build_video_benchmark", "generate_video", "load_scenes",
           "video_statistics", "flow", "frame_masks", "object_layer", "render_frame"]
