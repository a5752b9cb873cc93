"""VOIN's config dataclasses from params dicts, one rule for all of them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from instseg.video.models.trackers.base import config_from_dict

C = TypeVar("C")


def voin_config(cls: type[C], values: Mapping[str, Any], record: str) -> C:
    """``cls`` from ``values`` (YAML lists become tuples; an unknown key is an error naming
    ``record``), checked by its ``check()`` where it has one."""
    config = config_from_dict(cls, {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}, record)
    if hasattr(config, "check"):
        config.check()
    return config
