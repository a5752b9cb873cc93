"""Crash-safe checkpoint files.

A checkpoint is replaced, never overwritten in place: the new one is written to a temporary
file in the same directory, fsynced, then ``os.replace``-d over the old one (atomic on POSIX and
Windows). A crash or kill at any moment leaves either the old or the new file, never a torn one.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import uuid
from collections.abc import Callable, Mapping
from os import PathLike
from pathlib import Path
from typing import IO, Any

import torch

from instseg.errors import InputError


def atomic_write(path: str | PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(file)`` on a temporary sibling of ``path``, then atomically move it there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would survive the rename; "xb" honours the umask like torch.save.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if os.name == "posix":  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_save(obj: Any, path: str | PathLike) -> None:
    """``torch.save`` with the atomic-replace guarantee."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (plain tensors and numbers: no code runs);
    an unreadable file is an InputError naming it."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise InputError("checkpoint not found", path) from None
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as exc:
        raise InputError(f"unreadable checkpoint ({exc})", path) from None


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """A short digest of a state dict (names, dtypes, shapes and bytes): what a run trained on top of
    a model records, so that it is not reused once that model has changed."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())  # 0-dim too (BatchNorm's counter)
    return digest.hexdigest()[:16]
