"""Reproducibility: seeding, RNG state capture/restore, and a resumable, sharded data order.

Exact resumption needs two things beyond weights and optimizer state: every RNG the training
step may draw from (dropout, augmentation in the main process) restored to where it was, and
the data order a pure function of the iteration, so a restarted loader continues exactly.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices). ``deterministic`` also makes torch refuse
    nondeterministic kernels, needed for bit-exact CUDA runs at some speed cost."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; it must be set before first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def derive_seed(*keys: int) -> int:
    """A well-mixed 32-bit seed from several integers (e.g. seed, rank, iteration), so derived
    streams do not collide the way ``seed + rank`` and ``seed + 1`` would."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def rng_state() -> dict[str, Any]:
    """Every global RNG state, as tensors and plain numbers (loadable with ``weights_only``)."""
    _, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_cached)},
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state` (the CUDA state goes to the current device)."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss_next"]))


class InfiniteBatchSampler(Sampler[list[int]]):
    """Endless batches of dataset indices; a pure function of (seed, iteration), sharded by rank.

    The global sample stream is the concatenation of one seeded permutation per epoch; global
    batch ``i`` is positions ``[i*B, (i+1)*B)`` of that stream (batches may straddle epochs, so
    no sample is dropped), and rank ``r`` of ``W`` takes positions ``r::W`` of it. So the union
    of the rank batches is exactly the single-process batch, and ``start_iter=k`` yields what an
    uninterrupted sampler yields from its ``k``-th batch on.
    """

    def __init__(self, num_samples: int, global_batch_size: int, seed: int, start_iter: int = 0,
                 rank: int = 0, world_size: int = 1):
        if num_samples < 1:
            raise ValueError("the dataset is empty")
        if global_batch_size % world_size:
            raise ValueError(f"global batch size {global_batch_size} is not divisible by the "
                             f"world size {world_size}; ranks would weigh samples unequally")
        self.num_samples = num_samples
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.start_iter = start_iter
        self.rank = rank
        self.world_size = world_size
        self._cached: tuple[int, np.ndarray] | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.num_samples))
        return self._cached[1]

    def global_batch(self, iteration: int) -> list[int]:
        """The indices of global batch ``iteration`` (all ranks together)."""
        first = iteration * self.global_batch_size
        positions = range(first, first + self.global_batch_size)
        return [int(self._permutation(p // self.num_samples)[p % self.num_samples]) for p in positions]

    def local_batch(self, iteration: int) -> list[int]:
        """This rank's share of global batch ``iteration``."""
        return self.global_batch(iteration)[self.rank::self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        iteration = self.start_iter
        while True:
            yield self.local_batch(iteration)
            iteration += 1
