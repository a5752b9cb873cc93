"""Subnormal flushing reaches torch's worker threads (see instseg/numerics.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Multiplies 4M copies of the smallest float32 subnormal (bit pattern 1) by 2 on two threads,
# so both the calling thread and a pool thread touch subnormals; prints how many survive.
PROBE = """
import torch
torch.set_num_threads(2)
import instseg
tiny = torch.ones(1, dtype=torch.int32).view(torch.float32)
x = tiny.expand(1 << 22).contiguous()
print(int(((x * 2) != 0).sum()), x.numel())
"""


def _survivors(env_extra: dict[str, str]) -> tuple[int, int]:
    env = {k: v for k, v in os.environ.items() if k != "INSTSEG_KEEP_DENORMALS"} | env_extra
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    survivors, total = out.stdout.split()
    return int(survivors), int(total)


def test_import_flushes_subnormals_in_every_thread() -> None:
    survivors, total = _survivors({})
    assert total == 1 << 22
    assert survivors == 0


def test_keep_denormals_opt_out() -> None:
    survivors, total = _survivors({"INSTSEG_KEEP_DENORMALS": "1"})
    assert survivors == total


@pytest.mark.parametrize("value, expected", [("1", False), ("0", True), ("", True)])
def test_flush_denormals_reports_state(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    from instseg.numerics import flush_denormals

    monkeypatch.setenv("INSTSEG_KEEP_DENORMALS", value)
    assert flush_denormals() is expected
