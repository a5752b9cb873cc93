"""torch.distributed helpers that degrade to no-ops in a plain single-process run.

``torchrun`` describes the job through environment variables (RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT); :func:`init_distributed` joins that job, so the same script runs
unchanged with ``python train.py`` and ``torchrun --nproc_per_node N train.py``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def default_device() -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def init_distributed() -> torch.device:
    """Join the process group torchrun set up (NCCL on CUDA, gloo on CPU); a no-op when
    WORLD_SIZE is absent or 1. Returns this process's device."""
    device = default_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before NCCL init, so each rank owns one GPU
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not is_distributed():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def destroy_distributed() -> None:
    """Leave the process group (if any), so the process can exit cleanly."""
    if is_distributed():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the job (1 outside DDP)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's global rank (0 outside DDP)."""
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    """Rank 0: the only process that logs and writes files."""
    return rank() == 0


def all_gather_object(obj: Any) -> list[Any]:
    """``obj`` from every rank, indexed by rank (``[obj]`` outside DDP)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every rank (no-op outside DDP)."""
    if is_distributed():
        dist.barrier()


def mean_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """Average of ``tensor`` over ranks (itself outside DDP). A NaN on any rank propagates to all,
    so every rank reaches the same verdict on a non-finite loss."""
    if not is_distributed():
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor)
    return tensor / world_size()
