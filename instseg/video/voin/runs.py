"""A VOIN run on disk: what notebook 07's training writes and ``instseg inpaint --checkpoint`` reads.

A run directory holds ``voin.json`` (the configs of the generator and, where the run has them, of
the shape-completion model and the flow-completion net, the shape model's number of categories
and the pipeline's :class:`~instseg.video.voin.pipeline.InpaintConfig`) beside one state dict per
model (``generator.pt``, ``shape.pt``, ``flow.pt``). Every file is written atomically and the
weights before ``voin.json``, so a run whose JSON reads is complete (a crash mid-save leaves the
previous run or no run, never a mix that loads).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from instseg.engine.checkpoint import atomic_save, atomic_write, load_checkpoint
from instseg.errors import InputError
from instseg.video.voin.flow import FlowCompletionConfig, FlowCompletionNet
from instseg.video.voin.generator import GeneratorConfig, OcclusionAwareGenerator
from instseg.video.voin.pipeline import InpaintConfig
from instseg.video.voin.shape import ShapeCompletion, ShapeConfig

VOIN_FILE = "voin.json"
FORMAT = 1
WEIGHTS = {"generator": "generator.pt", "shape": "shape.pt", "flow": "flow.pt"}
BUILDERS: dict[str, tuple[type, type[nn.Module]]] = {
    "generator": (GeneratorConfig, OcclusionAwareGenerator),
    "shape": (ShapeConfig, ShapeCompletion),
    "flow": (FlowCompletionConfig, FlowCompletionNet),
}


@dataclass
class VoinRun:
    """The models of a VOIN run (``shape`` and ``flow`` None where the run has none) in eval mode."""

    generator: OcclusionAwareGenerator
    shape: ShapeCompletion | None
    flow: FlowCompletionNet | None
    settings: InpaintConfig

    @property
    def num_categories(self) -> int | None:
        """Category ids the shape model knows (1..n; 0 = unknown), None without one."""
        return None if self.shape is None else self.shape.cfg.num_classes

    def to(self, device: str | torch.device) -> VoinRun:
        for model in (self.generator, self.shape, self.flow):
            if model is not None:
                model.to(device)
        return self


def save_voin_run(run_dir: str | Path, generator: OcclusionAwareGenerator, shape: ShapeCompletion | None = None,
                  flow: FlowCompletionNet | None = None, settings: InpaintConfig = InpaintConfig()) -> Path:
    """Write a run directory (module docstring); returns the path of its ``voin.json``."""
    run_dir = Path(run_dir)
    models = {"generator": generator, "shape": shape, "flow": flow}
    for name, model in models.items():
        if model is not None:
            atomic_save({k: v.cpu() for k, v in model.state_dict().items()}, run_dir / WEIGHTS[name])
    data: dict[str, Any] = {"format": FORMAT, "settings": asdict(settings),
                            "num_categories": None if shape is None else shape.cfg.num_classes}
    data.update({name: None if model is None else asdict(model.cfg) for name, model in models.items()})
    path = run_dir / VOIN_FILE
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=2, sort_keys=True).encode()))
    return path


def _read_spec(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"no {VOIN_FILE}: not a VOIN run directory", path.parent) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the VOIN run ({exc.__class__.__name__}: {exc})", path) from None
    version = data.get("format") if isinstance(data, dict) else None
    if version != FORMAT:
        raise InputError(f"not a VOIN run of format {FORMAT} (format: {version!r})", path)
    if not isinstance(data.get("generator"), dict):
        raise InputError("the run has no generator config", path)
    return data


def _config(cls: type, values: Any, path: Path, name: str) -> Any:
    """``cls`` from the ``name`` entry of ``voin.json``; any bad entry is an InputError naming the file."""
    try:
        return cls.from_dict(values)
    except InputError as exc:
        raise InputError(exc.problem, path, exc.record) from None
    except (TypeError, AttributeError, ValueError) as exc:
        raise InputError(f"bad {name} config ({exc.__class__.__name__}: {exc})", path) from None


def _build(name: str, values: Any, run_dir: Path) -> nn.Module:
    config_cls, model_cls = BUILDERS[name]
    spec = run_dir / VOIN_FILE
    config = _config(config_cls, values, spec, name)
    try:
        model = model_cls(config)
    except (TypeError, ValueError) as exc:
        raise InputError(f"cannot build the {name} from its config ({exc})", spec) from None
    weights = run_dir / WEIGHTS[name]
    state = load_checkpoint(weights)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise InputError(f"the weights do not fit the {name} config in {VOIN_FILE}: {str(exc).splitlines()[0]}",
                         weights) from None
    return model.eval()


def load_voin_run(run_dir: str | Path) -> VoinRun:
    """The models and settings of a run directory; every missing or corrupt file is an InputError naming it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError("not a VOIN run directory (save_voin_run writes one)", run_dir)
    path = run_dir / VOIN_FILE
    data = _read_spec(path)
    settings = _config(InpaintConfig, data.get("settings") or {}, path, "settings")
    models = {name: None if data.get(name) is None else _build(name, data[name], run_dir) for name in BUILDERS}
    run = VoinRun(models["generator"], models["shape"], models["flow"], settings)
    if data.get("num_categories") != run.num_categories:
        raise InputError(f"num_categories {data.get('num_categories')} disagrees with the shape model's "
                         f"{run.num_categories}", path)
    return run
