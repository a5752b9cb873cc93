"""KITTI-MOTS / MOTSChallenge txt reader and writer: one RLE mask per line, so errors carry a line number.

Both benchmarks share the six columns ``frame obj_id class_id height width rle`` with
``obj_id = class_id * 1000 + instance``; ``obj_id`` 10000 with class 10 marks an ignore region.
The reader rejects what TrackEval rejects (overlapping masks in one frame, ignore region
included; an id twice in one frame) but names the line, where TrackEval names only the timestep.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np
from pycocotools import mask as mask_utils

from instseg.engine.checkpoint import atomic_write
from instseg.errors import InputError

IGNORE_ID = 10000
IGNORE_CLASS = 10


class MotsRow(NamedTuple):
    frame: int
    obj_id: int
    class_id: int
    rle: dict  # {"size": [h, w], "counts": str}


def write_kitti_mots(path: str | Path, rows: Iterable[tuple[int, int, int, dict]]) -> None:
    """Write rows sorted by (frame, obj_id) atomically, so a crash never leaves a half-written file."""
    lines = [f"{f} {o} {c} {r['size'][0]} {r['size'][1]} {r['counts']}\n"
             for f, o, c, r in sorted(rows, key=lambda row: (row[0], row[1]))]
    text = "".join(lines).encode("ascii")
    atomic_write(path, lambda f: f.write(text))


def _round_trips(rle: dict) -> bool:
    """A valid compressed RLE re-encodes to the same string; pycocotools decodes some garbage silently."""
    try:
        mask = mask_utils.decode(rle)
    except ValueError:
        return False
    return mask_utils.encode(np.asfortranarray(mask))["counts"].decode("ascii") == rle["counts"]


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="ascii").splitlines()
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read file ({exc.__class__.__name__}: {exc})", path) from None


def _parse(line: str, path: Path, rec: str) -> MotsRow:
    parts = line.split()
    if len(parts) != 6:
        raise InputError(f"expected 6 columns (frame obj_id class_id height width rle), got {len(parts)}", path, rec)
    try:
        frame, obj_id, class_id, h, w = (int(p) for p in parts[:5])
    except ValueError:
        raise InputError("frame, obj_id, class_id, height and width must be integers", path, rec) from None
    if frame < 0 or h <= 0 or w <= 0:
        raise InputError(f"frame must be >= 0 and height, width > 0, got frame {frame}, size {h}x{w}", path, rec)
    ignore = obj_id == IGNORE_ID and class_id == IGNORE_CLASS
    if not ignore and obj_id // 1000 != class_id:
        raise InputError(f"obj_id {obj_id} // 1000 != class_id {class_id} (ids are class * 1000 + instance; "
                         f"{IGNORE_ID} with class {IGNORE_CLASS} is the ignore region)", path, rec)
    rle = {"size": [h, w], "counts": parts[5]}
    if not _round_trips(rle):
        raise InputError("undecodable RLE counts", path, rec)
    return MotsRow(frame, obj_id, class_id, rle)


def read_kitti_mots(path: str | Path) -> list[MotsRow]:
    """Read and validate a MOTS txt file (empty file: no rows), rows in file order."""
    path = Path(path)
    rows: list[MotsRow] = []
    first_size: tuple[list, int] | None = None
    frames: dict[int, dict[int, tuple[int, dict]]] = {}  # frame -> obj_id -> (line, rle)
    for n, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        rec = f"line {n}"
        row = _parse(line, path, rec)
        if first_size is None:
            first_size = (row.rle["size"], n)
        elif row.rle["size"] != first_size[0]:
            (h, w), (h0, w0) = row.rle["size"], first_size[0]
            raise InputError(f"mask size {h}x{w} differs from {h0}x{w0} at line {first_size[1]}", path, rec)
        seen = frames.setdefault(row.frame, {})
        if row.obj_id in seen:
            raise InputError(f"obj_id {row.obj_id} appears twice in frame {row.frame} "
                             f"(first at line {seen[row.obj_id][0]})", path, rec)
        for other_id, (other_line, other_rle) in seen.items():
            if mask_utils.area(mask_utils.merge([row.rle, other_rle], intersect=True)) > 0:
                raise InputError(f"masks of objects {other_id} (line {other_line}) and {row.obj_id} overlap in "
                                 f"frame {row.frame}", path, rec)
        seen[row.obj_id] = (n, row.rle)
        rows.append(row)
    return rows


def read_mots_dir(directory: str | Path) -> dict[str, list[MotsRow]]:
    """Every ``<seq>.txt`` in a folder (a KITTI-MOTS or MOTSChallenge split), keyed by sequence name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError("MOTS folder not found", directory)
    files = sorted(directory.glob("*.txt"))
    if not files:
        raise InputError("no <sequence>.txt files in the MOTS folder", directory)
    return {p.stem: read_kitti_mots(p) for p in files}
