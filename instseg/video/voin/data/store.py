"""VOI samples on disk: one compressed ``.npz`` per sample and an index JSON per split, both written
atomically (a temporary file in the same folder, then ``os.replace``), and readers that name the
file and the problem when something is off.

Sensor noise makes frames nearly incompressible (zlib keeps a 12-frame 128 px clip at ~0.58 MB of
0.59 MB raw; the benchmark's PNGs are 31 KB a frame), so a sample stores only what it adds:

* the clean frames only where they differ from the corrupted ones (under a synthetic occluder; on
  the occluded part for a natural sample), the writer checking that they are equal elsewhere;
* the corrupted frames either whole (``embed_frames=True``: a self-contained file, 0.59 MB for
  12 frames) or, by default, as the benchmark frames they are (``meta["frame_files"]``, relative to
  the benchmark's ``frames/`` folder) plus the pasted occluder pixels (42 KB a sample at the cpu scale). The builder
  checks that the referenced frames are the rendered ones before it writes the reference.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from instseg.errors import InputError
from instseg.video.voin.data.samples import MASKS, VoiSample

SAMPLE_VERSION = 1
INDEX_VERSION = 1
_ENTRY_KEYS = ("file", "video_id", "track_id", "start", "length", "kind")


def _atomic(path: Path, write: Any) -> None:
    """Run ``write(file_object)`` on a temporary file beside ``path``, then rename it into place;
    on any failure the temporary file is removed and ``path`` is left as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def clean_region(kind: str, masks: dict[str, np.ndarray]) -> np.ndarray:
    """Where a sample's clean frames may differ from its corrupted ones."""
    return masks["occluder"] if kind == "synthetic" else masks["occluded"]


def pasted_region(kind: str, masks: dict[str, np.ndarray]) -> np.ndarray:
    """Where a sample's corrupted frames may differ from the benchmark's frames."""
    return masks["occluder"] if kind == "synthetic" else np.zeros_like(masks["occluder"])


def write_sample(path: str | Path, sample: VoiSample, embed_frames: bool = False) -> int:
    """Write ``sample`` as a compressed npz (corrupted frames whole if ``embed_frames``, else as a
    reference to ``sample.meta["frame_files"]``); returns its size in bytes."""
    path = Path(path)
    kind = sample.meta.get("kind")
    if kind not in ("synthetic", "natural"):
        raise ValueError(f"{path}: sample meta needs kind 'synthetic' or 'natural', got {kind!r}")
    masks = {k: getattr(sample, k).astype(bool) for k in MASKS}
    region = clean_region(kind, masks)
    if not np.array_equal(sample.clean[~region], sample.corrupted[~region]):
        raise ValueError(f"{path}: clean and corrupted frames differ outside the {kind} sample's clean region")
    arrays: dict[str, np.ndarray] = dict(masks, clean_patch=sample.clean[region])
    meta = dict(sample.meta, sample_version=SAMPLE_VERSION, embedded=embed_frames)
    if embed_frames:
        arrays["corrupted"] = sample.corrupted
    else:
        files = sample.meta.get("frame_files")
        if not isinstance(files, list) or len(files) != sample.length:
            raise ValueError(f"{path}: a sample stored by reference needs {sample.length} meta['frame_files']")
        arrays["corrupted_patch"] = sample.corrupted[pasted_region(kind, masks)]
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    _atomic(path, lambda fh: np.savez_compressed(fh, **arrays))
    return path.stat().st_size


def _load_arrays(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise InputError(f"unreadable VOI sample ({type(exc).__name__}: {exc})", path) from exc
    missing = [k for k in MASKS + ("clean_patch", "meta") if k not in arrays]
    if missing:
        raise InputError(f"not a VOI sample: lacks {missing}", path)
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError as exc:
        raise InputError(f"metadata is not JSON ({exc})", path) from exc
    if not isinstance(meta, dict) or meta.get("kind") not in ("synthetic", "natural"):
        raise InputError("metadata must be a JSON object with kind 'synthetic' or 'natural'", path)
    return arrays, meta


def _referenced_frames(path: Path, meta: dict[str, Any], frames_root: str | Path | None) -> np.ndarray:
    if frames_root is None:
        raise InputError("sample stores its frames by reference: pass frames_root (the benchmark's frames/)", path)
    files = meta.get("frame_files")
    if not isinstance(files, list) or not files:
        raise InputError("sample stored by reference lacks meta['frame_files']", path)
    frames = []
    for name in files:
        frame_path = Path(frames_root) / str(name)
        try:
            with Image.open(frame_path) as im:
                frames.append(np.asarray(im.convert("RGB")))
        except OSError as exc:
            raise InputError(f"referenced frame {frame_path} is unreadable ({exc})", path) from exc
    return np.stack(frames)


def read_sample(path: str | Path, frames_root: str | Path | None = None) -> VoiSample:
    """A sample written by :func:`write_sample`, checked (keys, dtypes, shapes, metadata); a sample
    stored by reference reads its frames under ``frames_root``."""
    path = Path(path)
    arrays, meta = _load_arrays(path)
    if "corrupted" in arrays:
        corrupted = arrays["corrupted"]
    elif "corrupted_patch" in arrays:
        corrupted = _referenced_frames(path, meta, frames_root)
    else:
        raise InputError("not a VOI sample: lacks 'corrupted' and 'corrupted_patch'", path)
    if corrupted.dtype != np.uint8 or corrupted.ndim != 4 or corrupted.shape[-1] != 3:
        raise InputError(f"corrupted frames must be uint8 (L, H, W, 3), got {corrupted.dtype} {corrupted.shape}", path)
    masks = {k: arrays[k] for k in MASKS}
    for k, m in masks.items():
        if m.dtype != bool or m.shape != corrupted.shape[:3]:
            raise InputError(f"mask {k!r} must be bool {corrupted.shape[:3]}, got {m.dtype} {m.shape}", path)
    corrupted = corrupted.copy()
    if "corrupted_patch" in arrays:
        pasted = pasted_region(meta["kind"], masks)
        if arrays["corrupted_patch"].shape != (int(pasted.sum()), 3) or arrays["corrupted_patch"].dtype != np.uint8:
            raise InputError(f"corrupted_patch must be uint8 ({int(pasted.sum())}, 3), got "
                             f"{arrays['corrupted_patch'].dtype} {arrays['corrupted_patch'].shape}", path)
        corrupted[pasted] = arrays["corrupted_patch"]
    region = clean_region(meta["kind"], masks)
    patch = arrays["clean_patch"]
    if patch.dtype != np.uint8 or patch.shape != (int(region.sum()), 3):
        raise InputError(f"clean_patch must be uint8 ({int(region.sum())}, 3), got {patch.dtype} {patch.shape}", path)
    clean = corrupted.copy()
    clean[region] = patch
    return VoiSample(corrupted, clean, *(masks[k] for k in MASKS), meta=meta)


def write_index(path: str | Path, index: dict[str, Any]) -> None:
    """Write a split's index JSON atomically."""
    text = json.dumps(dict(index, index_version=INDEX_VERSION), sort_keys=True, indent=1).encode()
    _atomic(Path(path), lambda fh: fh.write(text))


def read_index(path: str | Path) -> dict[str, Any]:
    """A split's index, checked: a JSON object whose ``samples`` entries name their file, video,
    track, first frame, length and kind."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"unreadable VOI index ({type(exc).__name__}: {exc})", path) from exc
    if not isinstance(data, dict) or not isinstance(data.get("samples"), list):
        raise InputError("expected a JSON object with a 'samples' list", path)
    if data.get("index_version") != INDEX_VERSION:
        raise InputError(f"index_version {data.get('index_version')!r}, expected {INDEX_VERSION}", path)
    for i, entry in enumerate(data["samples"]):
        lacking = [k for k in _ENTRY_KEYS if not isinstance(entry, dict) or k not in entry]
        if lacking:
            raise InputError(f"sample entry lacks {lacking}", path, f"samples[{i}]")
        if entry["kind"] not in ("synthetic", "natural"):
            raise InputError(f"kind {entry['kind']!r} is neither 'synthetic' nor 'natural'", path, f"samples[{i}]")
    return data


def frames_root(index_path: str | Path, index: dict[str, Any]) -> Path | None:
    """The benchmark's frames/ folder of a split's index (stored relative to the index's folder)."""
    root = index.get("frames_root")
    return None if root is None else Path(index_path).parent / root


def iter_samples(index_path: str | Path,
                 frames_root_override: str | Path | None = None) -> Iterator[tuple[dict[str, Any], VoiSample]]:
    """(index entry, sample) for every sample of a split, files resolved beside the index and frames
    under the index's ``frames_root`` (or ``frames_root_override``)."""
    index_path = Path(index_path)
    index = read_index(index_path)
    root = frames_root_override if frames_root_override is not None else frames_root(index_path, index)
    for entry in index["samples"]:
        yield entry, read_sample(index_path.parent / entry["file"], root)
