"""A training run on disk: what ``instseg train`` writes and ``instseg predict`` reads back.

A run directory holds ``run.json`` (everything needed to rebuild the model: detector, head,
sizes, and the label <-> category-id mapping of the training data), the engine's
``checkpoints/`` and ``metrics.csv``, and after validation ``val_results.json`` and
``val_metrics.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from instseg.config import scale_params
from instseg.errors import InputError
from instseg.models.detectors import build_detector

RUN_FILE = "run.json"


@dataclass
class RunSpec:
    """The recipe of a model: enough to rebuild it without the training data."""

    detector: str
    model: str
    num_classes: int
    label_to_category_id: dict[int, int]
    build: dict[str, Any] = field(default_factory=dict)

    def build_model(self) -> nn.Module:
        return build_detector(self.detector, self.num_classes, **self.build)

    def to_json(self) -> dict[str, Any]:
        return {"detector": self.detector, "model": self.model, "num_classes": self.num_classes,
                "label_to_category_id": {str(k): v for k, v in self.label_to_category_id.items()},
                "build": self.build}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunSpec":
        return cls(data["detector"], data["model"], int(data["num_classes"]),
                   {int(k): int(v) for k, v in data["label_to_category_id"].items()}, data.get("build", {}))


def run_spec(params: dict[str, Any], scale: str | None, model: str, detector: str,
             label_to_category_id: dict[int, int], mask_category_ids: list[int] | None = None) -> RunSpec:
    """Combine the named head in ``params['models']`` with the scale's detector settings
    (``detector``: shared, plus ``frcnn`` / ``fcos``: torchvision keyword arguments of that one).
    ``mask_category_ids`` (partial supervision) limits the mask loss to those categories."""
    if model not in params.get("models", {}):
        raise InputError(f"unknown model {model!r}; params.yaml defines {', '.join(params.get('models', {}))}")
    if detector not in ("frcnn", "fcos"):
        raise InputError(f"unknown detector {detector!r}; choose frcnn or fcos")
    scale_cfg = scale_params(params, scale)
    preset = params["models"][model]
    det = dict(scale_cfg["detector"]) | dict(scale_cfg.get(detector) or {})
    head_kwargs = {"conv_channels": det.pop("head_channels")} | dict(preset.get("head_kwargs", {}))
    size = det.pop("image_size")
    build = {"mask_head": preset["mask_head"], "head_kwargs": head_kwargs,
             "occluder_rule": preset.get("occluder_rule", "reference"),
             "min_size": size, "max_size": det.pop("max_image_size", size), **det}
    if mask_category_ids is not None:
        build["mask_labels"] = sorted(label for label, cid in label_to_category_id.items() if cid in set(mask_category_ids))
    return RunSpec(detector, model, len(label_to_category_id), dict(label_to_category_id), build)


def save_spec(spec: RunSpec, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_FILE).write_text(json.dumps(spec.to_json(), indent=2, sort_keys=True))


def load_run(checkpoint: str | Path) -> tuple[nn.Module, RunSpec]:
    """Rebuild a trained model from a run directory or a checkpoint file inside one."""
    path = Path(checkpoint)
    if not path.exists():
        raise InputError("checkpoint or run directory not found", path)
    if path.is_dir():
        run_dir = path
        candidates = [path / "checkpoints" / "model_final.pt", path / "checkpoints" / "last.pt"]
        weights = next((c for c in candidates if c.is_file()), None)
        if weights is None:
            raise InputError("run directory has no checkpoints/model_final.pt or last.pt", path)
    else:
        weights, run_dir = path, path.parent.parent if path.parent.name == "checkpoints" else path.parent
    if not (run_dir / RUN_FILE).is_file():
        raise InputError(f"no {RUN_FILE} beside the checkpoint: was it written by `instseg train`?", run_dir)
    spec = RunSpec.from_json(json.loads((run_dir / RUN_FILE).read_text()))
    model = spec.build_model()
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which
        raise InputError(f"cannot read checkpoint ({exc.__class__.__name__}: {exc})", weights) from None
    state = state.get("model", state)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"checkpoint does not fit the model in {RUN_FILE}: {str(exc).splitlines()[0]}", weights) from None
    return model.eval(), spec
