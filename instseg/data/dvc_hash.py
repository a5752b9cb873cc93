"""DVC's content hash of a directory, so a regenerated benchmark can be checked against data.dvc
without a DVC cache or remote (DVC 3, ``hash: md5``: no line-ending normalisation)."""

from __future__ import annotations

import hashlib
import json
import re
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
    return dir_summary(root)["md5"]


def dir_summary(root: str | Path) -> dict[str, str | int]:
    """``md5``, ``size`` (bytes of all files) and ``nfiles`` of a directory, as DVC records them."""
    root = Path(root)
    files = [p for p in root.rglob("*") if p.is_file()]
    entries = sorted(({"md5": file_md5(p), "relpath": p.relative_to(root).as_posix()} for p in files),
                     key=lambda e: e["relpath"])
    digest = hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"
    return {"md5": digest, "size": sum(p.stat().st_size for p in files), "nfiles": len(files)}


def record_tracked(dvc_file: str | Path, root: str | Path | None = None) -> dict[str, str | int]:
    """Rewrite the ``md5``/``size``/``nfiles`` of a one-output ``.dvc`` file from ``root`` (default:
    the output it tracks), keeping its comments and other lines, e.g. after a generator change.
    What ``dvc commit`` would write, without a DVC cache; returns the new values."""
    dvc_file = Path(dvc_file)
    path, _ = tracked_md5(dvc_file)
    summary = dir_summary(root if root is not None else dvc_file.parent / path)
    text = dvc_file.read_text(encoding="utf-8")
    for key, value in summary.items():
        text, n = re.subn(rf"^([ \t]*-?[ \t]*{key}:)[ \t]*\S+[ \t]*$", rf"\g<1> {value}", text, count=1, flags=re.M)
        if n == 0:
            raise InputError(f"no `{key}:` line to update", dvc_file)
    dvc_file.write_text(text, encoding="utf-8")
    if tracked_md5(dvc_file) != (path, summary["md5"]):
        raise InputError("rewritten file does not record the new md5", dvc_file)
    return summary


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
