"""A widget to scrub through a video of the benchmark: frame slider, video picker and toggles for
the true visible and amodal masks (one colour per track), a tracker's predicted tracks and the
exact optical flow.

Headless (papermill, nbval, CI) the same call draws a static strip of frames instead, as the
image browser does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import matplotlib.pyplot as plt
import numpy as np

from instseg.data.coco_json import segmentation_to_mask
from instseg.video.data.frames import read_image
from instseg.video.viz import draw_tracks, track_colour

LAYERS = ("visible", "amodal", "tracks", "flow")


def flow_to_rgb(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Flow [H, W, 2] as the usual colour wheel: hue = direction, brightness = speed (relative to
    ``max_magnitude``, default the largest in the frame)."""
    magnitude, angle = cv2.cartToPolar(flow[..., 0].astype(np.float32), flow[..., 1].astype(np.float32))
    scale = max_magnitude or float(magnitude.max()) or 1.0
    hsv = np.zeros((*flow.shape[:2], 3), dtype=np.uint8)
    hsv[..., 0] = (angle * 90 / np.pi).astype(np.uint8)  # OpenCV hue is 0..179
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(magnitude / scale * 255, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _decode(rle: dict | None, shape: tuple[int, int]) -> np.ndarray:
    """A frame's mask (an empty one where the track has none)."""
    return np.zeros(shape, dtype=bool) if rle is None else segmentation_to_mask(rle, *shape).astype(bool)


def _outline(mask: np.ndarray) -> np.ndarray:
    return mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def video_frame(gt: dict, video: dict, t: int, frames_root: str | Path, show: tuple[str, ...] = ("visible",),
                results: list[dict] | None = None) -> np.ndarray:
    """Frame ``t`` of ``video`` with the chosen layers: visible masks filled and amodal outlines in
    each true track's colour, ``tracks`` the predicted tracks of ``results`` (with their ids),
    ``flow`` the exact forward flow (needs the benchmark's ``scene``) in place of the frame."""
    shape = (video["height"], video["width"])
    if "flow" in show and "scene" in video and t + 1 < video["length"]:
        from instseg.video.data.occluded_shapes_vis import flow

        picture = flow_to_rgb(flow(video["scene"], t, "forward"))
    else:
        picture = read_image(Path(frames_root) / video["file_names"][t]).copy()
    anns = [a for a in gt["annotations"] if a["video_id"] == video["id"]]
    if "visible" in show:
        masks = np.stack([_decode(a["segmentations"][t], shape) for a in anns]) if anns else np.zeros((0, *shape), bool)
        picture = draw_tracks(picture, masks, np.array([a["track_id"] for a in anns]), alpha=0.45)
    if "amodal" in show:
        for a in anns:
            if a.get("amodal_segmentations") and a["amodal_segmentations"][t] is not None:
                picture[_outline(_decode(a["amodal_segmentations"][t], shape))] = track_colour(a["track_id"])
    if "tracks" in show and results:
        mine = [r for r in results if r["video_id"] == video["id"] and r["segmentations"][t] is not None]
        if mine:
            masks = np.stack([_decode(r["segmentations"][t], shape) for r in mine])
            picture = draw_tracks(picture, masks, np.array([r.get("track_id", k + 1) for k, r in enumerate(mine)]),
                                  alpha=0.35)
    return picture


def static_strip(gt: dict, video: dict, frames_root: str | Path, frames: list[int], show: tuple[str, ...],
                 results: list[dict] | None = None) -> plt.Figure:
    """The chosen frames of one video side by side: the headless stand-in for the widget."""
    fig, axes = plt.subplots(1, len(frames), figsize=(2.6 * len(frames), 2.9), squeeze=False)
    for ax, t in zip(axes[0], frames):
        ax.imshow(video_frame(gt, video, t, frames_root, show, results))
        ax.set_title(f"{video['name']} t={t}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig


def video_browser(gt: dict, frames_root: str | Path, results: list[dict] | None = None, interactive: bool = True,
                  video_index: int = 0, n_static: int = 6) -> Any:
    """A widget over the videos of ``gt`` (interactive) or a static strip of ``n_static`` frames
    of one video with visible and amodal masks and the predicted tracks."""
    videos = gt["videos"]
    if not interactive:
        video = videos[video_index]
        frames = sorted(set(np.linspace(0, video["length"] - 1, n_static).round().astype(int).tolist()))
        return static_strip(gt, video, frames_root, frames, ("visible", "amodal", "tracks"), results)
    import ipywidgets as widgets

    from instseg.viz.widgets import redraw_on, show_picture

    picker = widgets.Dropdown(options=[(v["name"], k) for k, v in enumerate(videos)], value=video_index,
                              description="video")
    slider = widgets.IntSlider(min=0, max=videos[video_index]["length"] - 1, value=0, description="frame")
    toggles = {name: widgets.Checkbox(value=name in ("visible", "amodal"), description=name) for name in LAYERS}
    out = widgets.Output()

    def redraw(*_: Any) -> None:
        video = videos[picker.value]
        slider.max = video["length"] - 1
        shown = tuple(name for name, box in toggles.items() if box.value)
        show_picture(out, video_frame(gt, video, slider.value, frames_root, shown, results),
                     f"{video['name']} frame {slider.value}")

    redraw_on((picker, slider, *toggles.values()), redraw)
    return widgets.VBox([widgets.HBox([picker, slider]), widgets.HBox(list(toggles.values())), out])
