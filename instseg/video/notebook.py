"""What every video notebook (04-07) needs before its first table: ``nb = video_setup("04_video_benchmark")``.

The image notebooks' :func:`instseg.experiments.setup.setup` with the video chapter's folders and
settings: the scale from ``INSTSEG_SCALE`` or the papermill parameter, the video benchmark from
``INSTSEG_VIDEO_DATA`` (else ``data_dir``), runs from ``INSTSEG_RUNS``, the report under
``INSTSEG_REPORTS`` and ``INSTSEG_HEADLESS=1`` for no live widgets, as nbval needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from instseg.config import load_params
from instseg.experiments.report import Report, repo_root
from instseg.video.params import video_scale_params


@dataclass(frozen=True)
class VideoNotebook:
    """A video notebook's scale, folders, settings (``video.scales.<scale>``) and open report."""

    name: str
    scale: str
    data: Path
    runs: Path
    params: Mapping[str, Any]
    preset: Mapping[str, Any]
    interactive: bool
    report: Report

    def section(self, key: str) -> dict[str, Any]:
        from instseg.video.params import video_section

        return video_section(dict(self.params), self.scale, key)


def video_setup(notebook: str, scale: str | None = None, *, data_dir: str | Path = "data/occluded_shapes_vis",
                runs_dir: str | Path = "runs", report_dir: str | Path | None = None, interactive: bool = True,
                params_path: str | Path | None = None) -> VideoNotebook:
    """The notebook's configuration with its report opened (provenance: the video preset)."""
    root = repo_root()
    params = load_params(params_path or root / "params.yaml")
    env = os.environ
    scale = env.get("INSTSEG_SCALE", scale) or params.get("scale", "cpu")
    preset = video_scale_params(params, scale)
    data = root / env.get("INSTSEG_VIDEO_DATA", data_dir)
    runs = root / env.get("INSTSEG_RUNS", runs_dir)
    reports = Path(env["INSTSEG_REPORTS"]) / notebook if "INSTSEG_REPORTS" in env else \
        root / (report_dir or Path("reports") / notebook)
    report = Report(reports, {"notebook": notebook, "scale": scale, "video": preset, "data": str(data)})
    print(f"{notebook}: scale {scale}, data {data}, runs {runs}, commit {report.provenance['git']['commit']}")
    return VideoNotebook(notebook, scale, data, runs, MappingProxyType(params), MappingProxyType(preset),
                         interactive and env.get("INSTSEG_HEADLESS") != "1", report)
