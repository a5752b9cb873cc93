"""The mask inputs of ``instseg inpaint``: a folder of per-frame PNGs, each an instance-id map,
matched to the video's frames by sorted order (numbers in natural order, as frames are).

A mask PNG is either a palette image (P mode: the palette index is the object id, as DAVIS and
YouTube-VOS store them) or a single-channel instance-id image (8 or 16 bit grey, or 1 bit); 0 is
the background. Anything with more channels (RGB, grey + alpha) is ambiguous and an error. Every
mask is read once before inpainting starts (:func:`scan_masks`), so a bad mask or a size mismatch
fails before any output is written; while inpainting, the masks are read again one frame at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from instseg.errors import InputError
from instseg.video.data.frames import _natural_key
from instseg.video.voin.pipeline import FrameMasks

MASK_SUFFIX = ".png"
ID_MODES = frozenset({"P", "L", "1", "I", "I;16", "I;16B", "I;16L"})  # one channel (or a palette index)


def mask_files(folder: str | Path, what: str = "masks") -> tuple[Path, ...]:
    """The mask PNGs of ``folder``, in frame order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"no such {what} folder (a folder of per-frame PNGs)", folder)
    files = tuple(sorted((p for p in folder.iterdir() if p.suffix.lower() == MASK_SUFFIX), key=_natural_key))
    if not files:
        raise InputError(f"the {what} folder holds no {MASK_SUFFIX} files", folder)
    return files


def read_id_mask(path: Path) -> np.ndarray:
    """One mask PNG as an instance-id map (H, W) int32 (module docstring for the formats)."""
    try:
        with Image.open(path) as image:
            if image.mode not in ID_MODES:
                raise InputError(f"mask has mode {image.mode} ({len(image.getbands())} channels) and no palette: "
                                 "write palette PNGs (index = object id) or single-channel instance ids", path)
            return np.asarray(image).astype(np.int32)
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"cannot read the mask as an image ({exc.__class__.__name__})", path) from None


def _size_error(path: Path, shape: tuple[int, ...], size: tuple[int, int], what: str) -> InputError:
    return InputError(f"{what} is {shape[1]}x{shape[0]} (WxH) but the frames are {size[1]}x{size[0]}", path)


def scan_masks(files: Sequence[Path], size: tuple[int, int], what: str = "mask") -> set[int]:
    """Read every mask once: each must fit the frames' ``size`` (H, W); the object ids (> 0) present."""
    present: set[int] = set()
    for path in files:
        ids = read_id_mask(path)
        if ids.shape != tuple(size):
            raise _size_error(path, ids.shape, size, what)
        present.update(int(k) for k in np.unique(ids) if k > 0)
    return present


def check_counts(length: int | None, files: Sequence[Path], video: Path, what: str = "masks") -> None:
    """InputError when a video of known ``length`` and its mask files differ in number."""
    if length is not None and length != len(files):
        raise InputError(f"the video {video} has {length} frames but the {what} folder has {len(files)} mask "
                         "files (one per frame)", files[0].parent)


def frame_items(frames: Iterable[np.ndarray], masks: Sequence[Path], amodal: Sequence[Path] | None = None
                ) -> Iterator[FrameMasks]:
    """Each frame with its masks, read lazily; a frame without a mask, or masks left over when the
    frames end (a video file that does not say how many frames it holds), is an InputError."""
    count = 0
    for frame in frames:
        if count >= len(masks):
            raise InputError(f"the video has more frames than the {len(masks)} mask files", masks[0].parent)
        visible = read_id_mask(masks[count])
        if visible.shape != frame.shape[:2]:
            raise _size_error(masks[count], visible.shape, frame.shape[:2], "mask")
        extra = None
        if amodal is not None:
            extra = read_id_mask(amodal[count])
            if extra.shape != frame.shape[:2]:
                raise _size_error(amodal[count], extra.shape, frame.shape[:2], "amodal mask")
        count += 1
        yield FrameMasks(frame, visible, extra)
    if count != len(masks):
        raise InputError(f"the video has {count} frames but there are {len(masks)} mask files", masks[0].parent)
