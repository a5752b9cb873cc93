"""Extra training images with heavy, same-category occlusion.

The thesis: "by further training BCNet on the synthetic occlusion dataset, the performance of AP
and AP50 is significantly promoted" on COCO-OCC. Our analogue is extra OccludedShapes training
images with denser, same-category overlaps, generated deterministically from a seed distinct from
the benchmark's, so notebook 01 can test that claim against a control of as many ordinary images.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from instseg.data.dataset import CocoInstanceDataset
from instseg.data.occluded_shapes import BenchmarkConfig, build_benchmark


def heavy_occlusion_config(base: BenchmarkConfig, images: int, seed: int, **overrides: Any) -> BenchmarkConfig:
    """``base`` with ``images`` training images only, its own ``seed``, every image crowded and every placement overlapping,
    more same-category overlaps and more objects per image; ``overrides`` replace any field (e.g.
    the base's own overlap settings, for a control set of ordinary images)."""
    unknown = set(overrides) - set(BenchmarkConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown benchmark parameters: {sorted(unknown)}")
    most = base.objects_per_image[1]
    heavy: dict[str, Any] = {"crowded_rate": 1.0, "overlap_rate": 1.0, "same_category_overlap_rate": 0.6,
                             "objects_per_image": (most, most + 2)}
    heavy.update({k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
    return replace(base, split_sizes={"train": images, "val": 0, "test": 0}, seed=seed, **heavy)


def extra_training_set(cfg: BenchmarkConfig, out_dir: str | Path, workers: int = 1) -> CocoInstanceDataset:
    """The ``train`` split of ``cfg`` in ``out_dir``, generated unless an identical one is there
    (a folder holding a different configuration is refused rather than overwritten)."""
    out = Path(out_dir)
    meta = out / "meta.json"
    wanted = json.loads(json.dumps(asdict(cfg)))
    if meta.is_file():
        if json.loads(meta.read_text())["config"] != wanted:
            raise ValueError(f"{out} holds a benchmark of another configuration; choose an empty folder")
    elif out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty and holds no benchmark")
    else:
        build_benchmark(cfg, out, workers)
    return CocoInstanceDataset(out / "annotations" / "train.json", out / "images")
