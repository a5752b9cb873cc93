"""Training engine: config, deterministic data order, crash-safe checkpoints, exact resume, DDP.

Typical use (same script for ``python`` and ``torchrun --nproc_per_node N``)::

    device = init_distributed()
    config = TrainConfig.from_dict(params["train"], "params.yaml")
    seed_everything(config.seed)            # model init is the caller's, so seed before it
    model = build_model()
    Trainer(model, dataset, config, "runs/x", collate_fn, device).train(resume=True)
"""

from instseg.engine.checkpoint import atomic_save, atomic_write, load_checkpoint, weights_digest
from instseg.engine.config import TrainConfig
from instseg.engine.distributed import (
    destroy_distributed,
    init_distributed,
    is_main_process,
    rank,
    world_size,
)
from instseg.engine.schedule import lr_at
from instseg.engine.seeding import InfiniteBatchSampler, derive_seed, rng_state, seed_everything, set_rng_state
from instseg.engine.trainer import NonFiniteLossError, Trainer, build_optimizer

__all__ = [
    "InfiniteBatchSampler",
    "NonFiniteLossError",
    "TrainConfig",
    "Trainer",
    "atomic_save",
    "atomic_write",
    "build_optimizer",
    "derive_seed",
    "destroy_distributed",
    "init_distributed",
    "is_main_process",
    "lr_at",
    "load_checkpoint",
    "weights_digest",
    "rank",
    "rng_state",
    "seed_everything",
    "set_rng_state",
    "world_size",
]
