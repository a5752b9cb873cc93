"""params.yaml access: one place that knows how scales are laid out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from instseg.errors import InputError

DEFAULT_PARAMS = Path("params.yaml")


def load_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """Read params.yaml; a missing or malformed file is an InputError naming it."""
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("parameter file not found (run from the repository root or pass --params)", path) from None
    except yaml.YAMLError as exc:
        raise InputError(f"malformed YAML: {exc}", path) from None
    if not isinstance(params, dict) or "scales" not in params:
        raise InputError("parameter file needs a 'scales' mapping", path)
    return params


def scale_params(params: dict[str, Any], scale: str | None = None) -> dict[str, Any]:
    """The preset for ``scale`` (default: the file's own ``scale``)."""
    scale = scale or params.get("scale", "cpu")
    if scale not in params["scales"]:
        raise InputError(f"unknown scale {scale!r}; known: {', '.join(params['scales'])}")
    return params["scales"][scale]


def scale_section(params: dict[str, Any], scale: str, key: str) -> dict[str, Any]:
    """``scales.<scale>.<key>`` as a mapping; a missing or non-mapping section is an InputError
    naming it, so a preset that lacks what a notebook needs fails before any work, not halfway."""
    section = scale_params(params, scale).get(key)
    if not isinstance(section, dict):
        problem = "is missing" if section is None else f"must be a mapping, not {type(section).__name__}"
        raise InputError(f"scales.{scale}.{key} {problem} (params.yaml)")
    return section
