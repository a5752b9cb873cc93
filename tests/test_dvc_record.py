"""Recording a regenerated benchmark in its .dvc file: the same md5, size and nfiles DVC writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from instseg.data.dvc_hash import dir_summary, record_tracked, tracked_md5
from instseg.errors import InputError


def test_record_tracked_writes_what_dvc_add_writes(tmp_path: Path) -> None:
    data = tmp_path / "data" / "bench"
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_text("alpha\n")
    (data / "sub" / "b.bin").write_bytes(bytes(range(256)) * 7)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "data/bench"], cwd=tmp_path, check=True)
    by_dvc = yaml.safe_load((tmp_path / "data" / "bench.dvc").read_text())["outs"][0]
    ours = tmp_path / "ours.dvc"
    ours.write_text("# a comment that must survive\nouts:\n- md5: 0123456789abcdef0123456789abcdef.dir\n"
                    "  size: 1\n  nfiles: 1\n  hash: md5\n  path: data/bench\n")
    summary = record_tracked(ours)
    assert summary == dir_summary(data)
    assert {k: by_dvc[k] for k in ("md5", "size", "nfiles")} == summary
    text = ours.read_text()
    assert text.startswith("# a comment that must survive\n") and "  hash: md5\n" in text
    assert tracked_md5(ours) == ("data/bench", by_dvc["md5"])


def test_record_tracked_needs_the_fields(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    bad = tmp_path / "x.dvc"
    bad.write_text("outs:\n- md5: abc.dir\n  path: d\n")
    with pytest.raises(InputError, match="no `size:` line"):
        record_tracked(bad)
