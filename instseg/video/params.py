"""The video chapter's settings in params.yaml: the top-level ``video`` key, laid out like the
image presets (``video.scales.<scale>.<section>``; the scale itself is the file's ``scale``).

Why a key of its own: the image stages depend on ``scales``, so video settings kept there would
make every image notebook stale whenever a tracking setting changes.
"""

from __future__ import annotations

from typing import Any

from instseg.errors import InputError


def video_scale_params(params: dict[str, Any], scale: str | None = None) -> dict[str, Any]:
    """``video.scales.<scale>`` (default scale: the file's own ``scale``)."""
    scale = scale or params.get("scale", "cpu")
    scales = (params.get("video") or {}).get("scales") or {}
    if scale not in scales:
        raise InputError(f"unknown video scale {scale!r}; video.scales defines {', '.join(scales) or 'none'}",
                         record="params.yaml")
    return scales[scale]


def video_section(params: dict[str, Any], scale: str | None, key: str) -> dict[str, Any]:
    """``video.scales.<scale>.<key>`` as a mapping, or an InputError naming what is missing."""
    section = video_scale_params(params, scale).get(key)
    if not isinstance(section, dict):
        problem = "is missing" if section is None else f"must be a mapping, not {type(section).__name__}"
        raise InputError(f"video.scales.{scale or params.get('scale', 'cpu')}.{key} {problem}", record="params.yaml")
    return section


def video_data_scale(params: dict[str, Any]) -> str:
    """The scale of the video benchmark tracked by data_vis.dvc (``video.data.scale``)."""
    return ((params.get("video") or {}).get("data") or {}).get("scale", "cpu")
