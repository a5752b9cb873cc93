"""DDP through torchrun (2 CPU processes, gloo, loopback only) equals one process with the same
global batch and seed.

Equality needs every loss term to be a mean over the images of the (equal-sized) rank batches:
DDP averages gradients over ranks, and the mean of the rank means is then the global-batch mean.
A model with BatchNorm would NOT match: BN normalises with the statistics of each rank's local
batch (B/W samples) and updates its running stats from those, not from the global batch, unless
it is converted to SyncBatchNorm (torchvision's detectors use FrozenBatchNorm2d, which is fine).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine_toy import ToyDataset, collate, make_model
from instseg.engine import InfiniteBatchSampler, TrainConfig, Trainer, load_checkpoint

WORKER = Path(__file__).with_name("ddp_worker.py")
CONFIG = {"max_iters": 5, "batch_size": 8, "lr": 0.1, "warmup_iters": 2, "warmup_factor": 0.5,
          "lr_steps": [4], "checkpoint_every": 2, "seed": 1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(command: list[str], env: dict[str, str], timeout: float = 120) -> None:
    """Run torchrun in its own process group, so a hung rank can be killed with its launcher."""
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True) as proc:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            pytest.fail(f"torchrun timed out after {timeout} s:\n{output[-4000:]}")
    assert proc.returncode == 0, output[-4000:]


def _losses(path: Path) -> torch.Tensor:
    with path.open(newline="") as f:
        return torch.tensor([[float(r[k]) for k in ("loss", "loss_reg", "loss_aux")] for r in csv.DictReader(f)])


def test_two_process_ddp_matches_single_process(tmp_path: Path) -> None:
    config = TrainConfig.from_dict(CONFIG)
    single = Trainer(make_model(0), ToyDataset(), config, tmp_path / "single", collate)
    single.train()

    # Loopback only: the rendezvous store on 127.0.0.1, gloo's sockets on the loopback device.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               str(WORKER), str(tmp_path / "ddp"), json.dumps(CONFIG)]
    _run(command, env)

    ddp_weights = torch.load(tmp_path / "ddp/checkpoints/model_final.pt", weights_only=True)
    for name, value in single.model.state_dict().items():
        assert torch.allclose(ddp_weights[name], value, rtol=0, atol=1e-6), name
    # Logged losses are rank means, i.e. the global-batch losses of the single process.
    assert torch.allclose(_losses(tmp_path / "ddp/metrics.csv"), _losses(tmp_path / "single/metrics.csv"),
                          rtol=0, atol=1e-6)
    # Each rank loaded only its own half of every global batch, and together exactly that batch.
    seen = [json.loads((tmp_path / f"ddp/seen_rank{r}.json").read_text()) for r in range(2)]
    sampler = InfiniteBatchSampler(len(ToyDataset()), 8, seed=1)
    for it in range(5):
        batch = sampler.global_batch(it)
        assert [seen[r][4 * it:4 * it + 4] for r in range(2)] == [batch[0::2], batch[1::2]]
    assert all(len(s) == 20 for s in seen)
    # Rank 0 checkpointed the RNG states of both ranks.
    assert len(load_checkpoint(tmp_path / "ddp/checkpoints/last.pt")["rng"]) == 2
