"""Figs. 5.3/5.4 on our benchmark: a tracklet's foreground/background attention maps over time,
beside the frames with its box, from a trained PCAN run on cached frames."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from instseg.video.models.trackers.quasi_dense import QuasiDenseConfig
from instseg.video.pcan.cache import CachedVideo
from instseg.video.pcan.model import PCAN
from instseg.video.pcan.tracking import TrackletPrototypes, track_frames_pcan
from instseg.video.viz import track_colour


@torch.no_grad()
def tracklet_attention(model: PCAN, video: CachedVideo, tracker: QuasiDenseConfig | None = None
                       ) -> dict[int, list[tuple[int, np.ndarray, np.ndarray]]]:
    """Per output track: (frame, box xyxy, maps [2, 14, 14] fg/bg) of every frame it is output in."""
    state: dict[str, TrackletPrototypes] = {}
    out: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for t, (frame, ids, _) in enumerate(track_frames_pcan(model, video.frames, video.size,
                                                           {"": (model, model.config.momentum)}, tracker,
                                                           tracklets_out=state)):
        for k, track in enumerate(ids.tolist()):
            if track in state[""].maps:
                out.setdefault(track, []).append((t, frame.detections.boxes[k].numpy(), state[""].maps[track].numpy()))
    return out


def attention_strip(frames: Sequence[np.ndarray], track: int, steps: Sequence[tuple[int, np.ndarray, np.ndarray]],
                    columns: int = 8):
    """Rows: the frame with the track's box, its foreground map, its background map; ``columns``
    frames evenly along the tracklet."""
    import matplotlib.pyplot as plt

    picks = [steps[i] for i in np.linspace(0, len(steps) - 1, min(columns, len(steps))).round().astype(int)]
    fig, axes = plt.subplots(3, len(picks), figsize=(1.9 * len(picks), 5.8), squeeze=False)
    colour = np.array(track_colour(track)) / 255
    for j, (t, box, maps) in enumerate(picks):
        axes[0, j].imshow(frames[t])
        x0, y0, x1, y1 = box
        axes[0, j].add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=colour, lw=1.5))
        axes[0, j].set_title(f"frame {t}", fontsize=8)
        for i, name in ((1, "foreground"), (2, "background")):
            axes[i, j].imshow(maps[i - 1], vmin=0, vmax=1, cmap="magma")
            if j == 0:
                axes[i, j].set_ylabel(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"track {track}: attention of its ROI onto its propagated prototypes (eq. 5.8)", fontsize=9)
    fig.tight_layout()
    return fig
