"""DVC's content hash of a directory, so a regenerated benchmark can be checked against data.dvc
without a DVC cache or remote (DVC 3, ``hash: md5``: no line-ending normalisation)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from instseg.errors import InputError


def file_md5(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def dir_md5(root: str | Path) -> str:
    """The ``md5`` DVC records for a tracked directory (``<hex>.dir``)."""
    root = Path(root)
    entries = [{"md5": file_md5(p), "relpath": p.relative_to(root).as_posix()}
               for p in root.rglob("*") if p.is_file()]
    entries.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def tracked_md5(dvc_file: str | Path) -> tuple[str, str]:
    """(path, md5) of the single output recorded in a ``.dvc`` file."""
    dvc_file = Path(dvc_file)
    try:
        record = yaml.safe_load(dvc_file.read_text(encoding="utf-8"))
        out = record["outs"][0]
        return out["path"], out["md5"]
    except FileNotFoundError:
        raise InputError("DVC file not found", dvc_file) from None
    except (yaml.YAMLError, KeyError, IndexError, TypeError) as exc:
        raise InputError(f"not a DVC file with one output ({exc.__class__.__name__})", dvc_file) from None
