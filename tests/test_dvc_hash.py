"""Our directory hash must equal the one DVC itself records (the reference implementation)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from instseg.data.dvc_hash import dir_md5, tracked_md5
from instseg.errors import InputError

DVC = [sys.executable, "-m", "dvc"]


def test_dir_md5_equals_dvc_add(tmp_path: Path) -> None:
    data = tmp_path / "data" / "bench"
    (data / "sub" / "deeper").mkdir(parents=True)
    (data / "a.txt").write_text("alpha\r\nwindows line ending\n")
    (data / "sub" / "b.bin").write_bytes(bytes(range(256)) * 10)
    (data / "sub" / "deeper" / "c.json").write_text('{"x": 1}')
    subprocess.run([*DVC, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*DVC, "add", "-q", "data/bench"], cwd=tmp_path, check=True)
    recorded = yaml.safe_load((tmp_path / "data" / "bench.dvc").read_text())["outs"][0]["md5"]
    assert dir_md5(data) == recorded
    assert tracked_md5(tmp_path / "data" / "bench.dvc") == ("bench", recorded)


def test_tracked_md5_rejects_non_dvc_files(tmp_path: Path) -> None:
    bad = tmp_path / "x.dvc"
    bad.write_text("hello: world\n")
    with pytest.raises(InputError, match="x.dvc: not a DVC file"):
        tracked_md5(bad)
