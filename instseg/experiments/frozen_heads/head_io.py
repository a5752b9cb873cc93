"""Trained heads on disk: one file per (variant, seed) that rebuilds the head without its run.

Why: notebook 02 scores notebook 01's heads on another split, so a head file carries what rebuilds
it (registry name, plain hyperparameters, width) beside its weights. Detector-derived inputs
(MaskX's class embeddings) are buffers of the head, so they are in its weights too: a head loads
with or without the detector it trained on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from instseg.engine.checkpoint import atomic_save
from instseg.experiments.frozen_heads.variants import HeadVariant, build_head
from instseg.models.mask_heads import detector_input_names

HEAD_FORMAT = 1  # the head-file layout written by save_head


def save_head(head: nn.Module, variant: HeadVariant, channels: int, seed: int, path: str | Path) -> Path:
    """Write a trained head atomically with what rebuilds it (:func:`load_head`): the variant's
    registry name, plain hyperparameters, width and seed."""
    blob = {"format": HEAD_FORMAT, "variant": variant.name, "head": variant.head, "head_kwargs": variant.head_kwargs,
            "occluder_rule": variant.occluder_rule, "amodal": variant.amodal, "channels": channels, "seed": seed,
            "in_channels": _in_channels(head), "state_dict": head.state_dict()}
    atomic_save(blob, Path(path))
    return Path(path)


def load_head(path: str | Path, detector: nn.Module | None = None) -> tuple[nn.Module, HeadVariant, dict[str, Any]]:
    """A head saved by :func:`save_head`, in eval mode, with its variant and the saved record (seed,
    channels). A head with detector-derived inputs reads them from ``detector`` when given, else
    from its saved buffers of the same names (the weights loaded afterwards hold those buffers
    either way); the returned variant carries the inputs the head was built with."""
    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    if blob.get("format") != HEAD_FORMAT:
        raise ValueError(f"{path}: not a head file of format {HEAD_FORMAT} (got {blob.get('format')!r})")
    variant = HeadVariant(blob["variant"], blob["head"], blob["head_kwargs"], blob["occluder_rule"], blob["amodal"])
    variant = (variant.for_detector(detector) if detector is not None
               else replace(variant, inputs=_saved_inputs(variant.head, blob["state_dict"], path)))
    head = build_head(variant, blob["in_channels"], blob["channels"])
    head.load_state_dict(blob["state_dict"])
    return head.eval(), variant, {k: v for k, v in blob.items() if k != "state_dict"}


def _saved_inputs(name: str, state_dict: Mapping[str, Tensor], path: str | Path) -> dict[str, Tensor]:
    """The detector-derived inputs of the head ``name`` (none for most), from its saved buffers."""
    needed = detector_input_names(name)
    missing = [key for key in needed if key not in state_dict]
    if missing:
        raise ValueError(f"{path}: the {name!r} head's weights hold no {missing}: pass detector=")
    return {key: state_dict[key] for key in needed}


def _in_channels(head: nn.Module) -> int:
    first = next(m for m in head.modules() if isinstance(m, nn.Conv2d))
    return int(first.in_channels)
