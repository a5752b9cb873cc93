"""Training hyper-parameters: one validated dataclass built from a params.yaml section.

Validation happens here, once, so that a typo in params.yaml fails before any data is loaded
rather than after an hour of training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from os import PathLike
from typing import Any

from instseg.errors import InputError

OPTIMIZERS = ("sgd", "adamw")
AMP_DTYPES = ("auto", "bfloat16", "float16")

# Keys that may change between a run and its resumption: they do not alter the trajectory.
RESUMABLE_CHANGES = frozenset({"max_iters", "checkpoint_every", "log_every", "num_workers"})


@dataclass(frozen=True)
class TrainConfig:
    """Iteration-based training schedule (detectron2 style).

    ``batch_size`` is the GLOBAL batch: under DDP each of the ``W`` ranks takes ``batch_size / W``
    samples, so a run means the same thing on any number of GPUs. ``momentum`` only applies to
    SGD. ``amp`` is honoured on CUDA only (``amp_dtype="auto"``: bfloat16 where supported, else
    float16 with a GradScaler); on CPU it is ignored. ``deterministic`` turns on
    ``torch.use_deterministic_algorithms`` (slower; only needed for bit-exact CUDA runs).
    ``ema_decay`` > 0 keeps an exponential moving average of the weights, updated after every
    step: what the trainer's ``eval_model`` is and what the run ends with (see :class:`Trainer`).
    """

    max_iters: int
    optimizer: str = "sgd"
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 16
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    lr_steps: tuple[int, ...] = ()
    gamma: float = 0.1
    checkpoint_every: int = 5000
    log_every: int = 20
    seed: int = 0
    amp: bool = False
    amp_dtype: str = "auto"
    grad_clip: float | None = None
    num_workers: int = 0
    deterministic: bool = False
    ema_decay: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr_steps", tuple(self.lr_steps))
        problems = _problems(self)
        if problems:
            raise InputError("; ".join(problems), record="train config")

    @classmethod
    def from_dict(cls, params: dict[str, Any], source: str | PathLike | None = None) -> TrainConfig:
        """Build from a mapping (e.g. ``params["train"]``); unknown or mistyped keys are an
        InputError naming ``source`` (the YAML file) and the key."""
        if not isinstance(params, dict):
            raise InputError(f"training parameters must be a mapping, got {type(params).__name__}", source)
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise InputError(f"unknown training parameters {unknown}; known: {', '.join(known)}", source)
        if "max_iters" not in params:
            raise InputError("training parameters need 'max_iters'", source)
        values = {}
        for name, value in params.items():
            try:
                values[name] = _coerce(name, value)
            except (TypeError, ValueError) as exc:
                raise InputError(str(exc), source, f"train.{name}") from None
        try:
            return cls(**values)
        except InputError as exc:
            raise InputError(exc.problem, source, exc.record) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists, not tuples), so checkpoints load with ``weights_only=True``."""
        out = dataclasses.asdict(self)
        out["lr_steps"] = list(self.lr_steps)
        return out


_FLOATS = {"lr", "momentum", "weight_decay", "warmup_factor", "gamma", "grad_clip", "ema_decay"}
_INTS = {"max_iters", "batch_size", "warmup_iters", "checkpoint_every", "log_every", "seed", "num_workers"}
_BOOLS = {"amp", "deterministic"}


def _coerce(name: str, value: Any) -> Any:
    """YAML reads ``1e-3`` as a string (it needs ``1.0e-3``); accept numeric strings like that."""
    if name in _BOOLS:
        if not isinstance(value, bool):
            raise TypeError(f"must be true or false, got {value!r}")
        return value
    if name == "grad_clip" and value is None:
        return None
    if name in _FLOATS:
        return _number(value, float)
    if name in _INTS:
        return _number(value, int)
    if name == "lr_steps":
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"must be a list of iterations, got {value!r}")
        return tuple(_number(v, int) for v in value)
    return value


def _number(value: Any, kind: type) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f"must be a number, got {value!r}")
    number = float(value)
    if kind is int:
        if not number.is_integer():
            raise ValueError(f"must be an integer, got {value!r}")
        return int(number)
    return number


def _problems(cfg: TrainConfig) -> list[str]:
    checks = [
        (cfg.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {cfg.optimizer!r}"),
        (cfg.amp_dtype in AMP_DTYPES, f"amp_dtype must be one of {AMP_DTYPES}, got {cfg.amp_dtype!r}"),
        (cfg.lr > 0, f"lr must be > 0, got {cfg.lr}"),
        (cfg.momentum >= 0, f"momentum must be >= 0, got {cfg.momentum}"),
        (cfg.weight_decay >= 0, f"weight_decay must be >= 0, got {cfg.weight_decay}"),
        (cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}"),
        (cfg.max_iters >= 1, f"max_iters must be >= 1, got {cfg.max_iters}"),
        (cfg.warmup_iters >= 0, f"warmup_iters must be >= 0, got {cfg.warmup_iters}"),
        (0 < cfg.warmup_factor <= 1, f"warmup_factor must be in (0, 1], got {cfg.warmup_factor}"),
        (all(s > 0 for s in cfg.lr_steps) and list(cfg.lr_steps) == sorted(set(cfg.lr_steps)),
         f"lr_steps must be strictly increasing positive iterations, got {list(cfg.lr_steps)}"),
        (cfg.gamma > 0, f"gamma must be > 0, got {cfg.gamma}"),
        (cfg.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {cfg.checkpoint_every}"),
        (cfg.log_every >= 1, f"log_every must be >= 1, got {cfg.log_every}"),
        (cfg.seed >= 0, f"seed must be >= 0, got {cfg.seed}"),
        (cfg.grad_clip is None or cfg.grad_clip > 0, f"grad_clip must be > 0 or null, got {cfg.grad_clip}"),
        (cfg.num_workers >= 0, f"num_workers must be >= 0, got {cfg.num_workers}"),
        (0 <= cfg.ema_decay < 1, f"ema_decay must be in [0, 1) (0: no average), got {cfg.ema_decay}"),
    ]
    return [message for ok, message in checks if not ok]
