"""The flows VOIN's flow completion starts from and is trained against, both directions.

* **Exact flow of the clean scene**: a VOI sample does not store flow (128x128x2 float32 is
  128 KiB a frame and direction), but its meta names the scene, target and frames, and the
  generator computes flow exactly from the known motions (``occluded_shapes_vis.flow``). The clean
  scene is the sample's scene with the target moved in front of everything (``front_scene``): the
  flow is then the target's own motion on its whole amodal region, hidden part included, and the
  scene's elsewhere. For a synthetic sample nothing hides the target in the source clip, so this
  is the source scene's flow; a pasted occluder is not part of the clean scene and never moves any
  flow.
* **Initial flow**: OpenCV DIS on the *corrupted* frames (what a method sees; grey levels),
  offline, preset ``FAST``: on 12 samples of the cpu split (both directions) its EPE on the
  target's amodal region / occluded part was 1.59 / 1.78 px, against ``MEDIUM``'s 1.59 / 2.46 and
  ``ULTRAFAST``'s 1.73 / 2.09, at 0.4 ms a 128x128 pair (``MEDIUM``: 2.1 ms).

Convention (both functions): ``forward[k]`` is the flow of frame k to frame k+1 and
``backward[k]`` that of frame k+1 to frame k, pixels ``(dx, dy)``, float32 ``(L-1, H, W, 2)``.
"""

from __future__ import annotations

from typing import Any, Mapping

import cv2
import numpy as np

from instseg.errors import InputError
from instseg.video.data.occluded_shapes_vis.flow import flow as scene_flow
from instseg.video.data.occluded_shapes_vis.render import amodal_mask, track
from instseg.video.voin.data.samples import VoiSample, front_scene

DIS_PRESET = cv2.DISOPTICAL_FLOW_PRESET_FAST
DIRECTIONS: tuple[str, ...] = ("forward", "backward")


def exact_flows(scene: dict[str, Any], start: int, length: int) -> dict[str, np.ndarray]:
    """The generator's exact flow of frames ``start .. start + length - 1`` of ``scene``, both directions."""
    if length < 2:
        raise InputError(f"a flow needs at least 2 frames, got {length}", record=f"frames {start}..")
    fw = np.stack([scene_flow(scene, t, "forward") for t in range(start, start + length - 1)])
    bw = np.stack([scene_flow(scene, t + 1, "backward") for t in range(start, start + length - 1)])
    return {"forward": fw, "backward": bw}


def _record(meta: Mapping[str, Any]) -> str:
    return (f"video {meta.get('video_id', '?')} track {meta.get('track_id', '?')} "
            f"frames {meta.get('start', '?')}..")


def clean_scene(sample: VoiSample, scenes: Mapping[int, dict[str, Any]]) -> dict[str, Any]:
    """The sample's scene with its target in front, checked against the sample: same frame size and
    the target's amodal masks equal to the sample's (a different or regenerated benchmark fails here)."""
    meta = sample.meta
    record = _record(meta)
    missing = [k for k in ("video_id", "track_id", "start") if k not in meta]
    if missing:
        raise InputError(f"sample meta lacks {missing}; the exact flow needs the scene, target and first frame",
                         record=record)
    if meta["video_id"] not in scenes:
        raise InputError(f"no scene for video {meta['video_id']} among {len(scenes)} loaded", record=record)
    scene = scenes[meta["video_id"]]
    start, n = int(meta["start"]), sample.length
    if (scene["height"], scene["width"]) != tuple(sample.corrupted.shape[1:3]):
        raise InputError(f"scene is {scene['height']}x{scene['width']}, sample frames "
                         f"{sample.corrupted.shape[1]}x{sample.corrupted.shape[2]}", record=record)
    if start < 0 or start + n > scene["length"]:
        raise InputError(f"frames {start}..{start + n - 1} outside the {scene['length']}-frame video", record=record)
    obj = track(scene, int(meta["track_id"]))
    for k in range(n):
        if not np.array_equal(amodal_mask(scene, obj, start + k), sample.amodal[k]):
            raise InputError(f"the scene's target outline differs from the sample's amodal mask at clip frame {k}",
                             record=record)
    return front_scene(scene, int(meta["track_id"]))


def sample_flows(sample: VoiSample, scenes: Mapping[int, dict[str, Any]]) -> dict[str, np.ndarray]:
    """Exact forward/backward flow of a VOI sample's clean scene (see the module docstring)."""
    return exact_flows(clean_scene(sample, scenes), int(sample.meta["start"]), sample.length)


def _gray(frame: np.ndarray) -> np.ndarray:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise InputError(f"DIS needs uint8 (H, W, 3) RGB frames, got {frame.dtype} {frame.shape}")
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def dis_flow(frame_a: np.ndarray, frame_b: np.ndarray, preset: int = DIS_PRESET) -> np.ndarray:
    """DIS flow of ``frame_a`` to ``frame_b`` (uint8 RGB, same size): float32 (H, W, 2) (dx, dy)."""
    if frame_a.shape != frame_b.shape:
        raise InputError(f"frames differ in shape: {frame_a.shape} and {frame_b.shape}")
    dis = cv2.DISOpticalFlow_create(preset)
    return dis.calc(_gray(frame_a), _gray(frame_b), None).astype(np.float32)


def initial_flows(frames: np.ndarray, preset: int = DIS_PRESET) -> dict[str, np.ndarray]:
    """DIS flow of consecutive frames (L, H, W, 3) uint8, both directions (module convention)."""
    if frames.ndim != 4 or len(frames) < 2:
        raise InputError(f"need (L >= 2, H, W, 3) frames, got shape {frames.shape}")
    fw = np.stack([dis_flow(frames[k], frames[k + 1], preset) for k in range(len(frames) - 1)])
    bw = np.stack([dis_flow(frames[k + 1], frames[k], preset) for k in range(len(frames) - 1)])
    return {"forward": fw, "backward": bw}
