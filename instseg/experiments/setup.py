"""What every notebook needs before its first table, built once: ``nb = setup("01_bcnet_occlusion")``.

Why: each notebook used to copy the same preamble (the scale from ``INSTSEG_SCALE`` or the
papermill parameter, data and run folders from ``INSTSEG_DATA`` / ``INSTSEG_RUNS``, params.yaml,
the report folder and its provenance) and read parameters by string keys, so a preset lacking a
section (``scales.paper.ablation``) failed with a KeyError halfway through a run, and
``scales.paper.datasets`` was read by nothing. Here every section a notebook reads is a typed,
frozen dataclass built by ``from_params`` (a missing key is an :class:`InputError` naming it), and
:class:`NotebookConfig` says which files each notebook reads at its scale:

==============================  ================================  =====================================
notebook: role                  a scale without ``datasets``      a scale with ``datasets`` (``paper``)
                                (``smoke``, ``cpu``)
==============================  ================================  =====================================
00_benchmark: benchmark         OccludedShapes: train, val,       the same: the benchmark is the
                                val_occ, test                     notebook's subject
01_bcnet_occlusion: main        OccludedShapes: train, val,       COCO: train2017, val2017, and as
                                val_occ                           val_occ the COCO-OCC rule on val2017
02_bcnet_amodal: table_3_5      OccludedShapes: train, val        COCOA: train, val
02_bcnet_amodal: table_3_6      OccludedShapes: train, val        KINS: train, test (as val)
02_bcnet_amodal: table_3_8      OccludedShapes: test              COCO: val2017 as test
03_cpmask_...: partial          OccludedShapes: train, val        COCO: train2017, val2017 (voc / nonvoc)
==============================  ================================  =====================================

COCO-OCC: the thesis selects 1,005 of the 5,000 val2017 images "where the overlapping ratio
between the bounding boxes of objects is at least 0.2", but **the official 1,005-image list is not
released**, so ``val_occ`` of COCO is computed with :func:`instseg.data.occlusion.coco_occ_image_ids`
on val2017 (threshold ``evaluation.coco_occ_threshold``; box IoU is our reading of the ratio) and
need not be the same images. Table 3.8's COCO test-dev has no public annotations, so val2017
stands in unless the dataset entry gives ``test_json`` / ``test_images``.

Run folders: on OccludedShapes the detectors and saved heads live in the runs folder itself
(``runs/frcnn``, ``runs/heads``: what ``dvc repro`` writes); a real dataset's live in
``<runs>/<dataset>/`` (``runs/coco/frcnn``), since each dataset needs its own detector.
KINS and COCOA files are read by :func:`instseg.data.amodal_formats.load_amodal` (``format`` of
the dataset entry, detected when absent), so every reader sees the same schema.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from instseg.config import load_params, scale_params, scale_section
from instseg.errors import InputError
from instseg.experiments.report import Report, repo_root

if TYPE_CHECKING:  # heavy imports (torch) only where a notebook builds datasets or head configs
    from instseg.data.dataset import CocoInstanceDataset
    from instseg.experiments.frozen_heads import AblationConfig
    from instseg.experiments.partial_supervision import FewShotConfig

SPLITS = ("train", "val", "val_occ", "test")
# the roles each notebook reads (the first is its main dataset), and the sections of
# scales.<scale> it needs besides `notebooks`, `detector` and the top-level `evaluation`
NOTEBOOKS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = MappingProxyType({
    "00_benchmark": (("benchmark",), ()),
    "01_bcnet_occlusion": (("main",), ("ablation",)),
    "02_bcnet_amodal": (("table_3_5", "table_3_6", "table_3_8"), ("ablation",)),
    "03_cpmask_partial_supervision": (("partial",), ("partial",)),
})
# at a scale with `datasets`: (entry of scales.<scale>.datasets, the splits it serves) per role;
# 00_benchmark always reads the benchmark, which is its subject
REAL_DATASETS: Mapping[str, tuple[str, tuple[str, ...]]] = MappingProxyType({
    "main": ("coco", ("train", "val", "val_occ")),
    "table_3_5": ("cocoa", ("train", "val")),
    "table_3_6": ("kins", ("train", "val")),
    "table_3_8": ("coco", ("test",)),
    "partial": ("coco", ("train", "val")),
})
BENCHMARK_SPLITS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "benchmark": SPLITS, "main": ("train", "val", "val_occ"), "table_3_5": ("train", "val"),
    "table_3_6": ("train", "val"), "table_3_8": ("test",), "partial": ("train", "val"),
})
FORMATS = ("auto", "coco", "kins", "cocoa")


def _get(section: Mapping[str, Any], key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    """``section[key]``, checked to be a ``kind``; an InputError naming ``where.key`` otherwise."""
    if key not in section:
        raise InputError(f"{where}.{key} is missing (params.yaml)")
    value = section[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise InputError(f"{where}.{key} must be {' or '.join(k.__name__ for k in kinds)}, got {value!r} (params.yaml)")
    return value


def _ints(section: Mapping[str, Any], key: str, where: str) -> tuple[int, ...]:
    values = _get(section, key, where, list)
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise InputError(f"{where}.{key} must be a non-empty list of integers, got {values!r} (params.yaml)")
    return tuple(values)


# ------------------------------------------------------------------------------------------------
# parameter sections


@dataclass(frozen=True)
class EvaluationSettings:
    """The top-level ``evaluation`` section: the COCO-OCC threshold and the occlusion-ratio bins."""

    coco_occ_threshold: float
    occlusion_bins: tuple[tuple[float, float], ...]

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "EvaluationSettings":
        section = _get(params, "evaluation", "params", dict)
        bins = _get(section, "occlusion_bins", "evaluation", list)
        if not all(isinstance(b, list) and len(b) == 2 for b in bins):
            raise InputError(f"evaluation.occlusion_bins must be [[lo, hi], ...], got {bins!r} (params.yaml)")
        return cls(float(_get(section, "coco_occ_threshold", "evaluation", (int, float))),
                   tuple((float(lo), float(hi)) for lo, hi in bins))


@dataclass(frozen=True)
class NotebookSettings:
    """``scales.<scale>.notebooks``: how many examples the figures and browsers show."""

    n_examples: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any], scale: str) -> "NotebookSettings":
        section = scale_section(dict(params), scale, "notebooks")
        return cls(_get(section, "n_examples", f"scales.{scale}.notebooks", int))


@dataclass(frozen=True)
class DetectorSettings:
    """``scales.<scale>.detector``, the parts the notebooks read (``head_channels``: the width of
    every head of a table); ``instseg train`` reads the rest through ``run_spec``."""

    backbone: str
    head_channels: int
    image_size: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any], scale: str) -> "DetectorSettings":
        where, section = f"scales.{scale}.detector", scale_section(dict(params), scale, "detector")
        return cls(_get(section, "backbone", where, str), _get(section, "head_channels", where, int),
                   _get(section, "image_size", where, int))


@dataclass(frozen=True)
class SyntheticOcclusionSettings:
    """``ablation.synthetic_occlusion``: extra heavy-occlusion OccludedShapes training images."""

    images: int
    seed: int


@dataclass(frozen=True)
class HeadBudget:
    """What every frozen-detector head of a notebook trains with: the same for every row of a table."""

    seeds: tuple[int, ...]
    iters: int
    batch_rois: int
    lr: float
    jitter_per_gt: int

    @staticmethod
    def _fields(s: Mapping[str, Any], where: str) -> dict[str, Any]:
        return {"seeds": _ints(s, "seeds", where), "iters": _get(s, "iters", where, int),
                "batch_rois": _get(s, "batch_rois", where, int), "lr": float(_get(s, "lr", where, (int, float))),
                "jitter_per_gt": _get(s, "jitter_per_gt", where, int)}

    def head_config(self, channels: int, bins: tuple[tuple[float, float], ...] | None = None,
                    boxes: str = "detector") -> "AblationConfig":
        """The head-ablation budget (``instseg.experiments.frozen_heads.AblationConfig``)."""
        from instseg.experiments.frozen_heads import AblationConfig

        return AblationConfig(iters=self.iters, batch_rois=self.batch_rois, lr=self.lr, channels=channels,
                              jitter_per_gt=self.jitter_per_gt, boxes=boxes, bins=bins)


@dataclass(frozen=True)
class AblationSettings(HeadBudget):
    """``scales.<scale>.ablation``: the frozen-detector head ablations of notebooks 01 and 02."""

    synthetic_occlusion: SyntheticOcclusionSettings
    tables: tuple[str, ...]  # notebook 01's studies run at this scale (frozen_heads.STUDIES)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], scale: str) -> "AblationSettings":
        from instseg.experiments.frozen_heads import STUDIES

        where, s = f"scales.{scale}.ablation", scale_section(dict(params), scale, "ablation")
        syn, ws = _get(s, "synthetic_occlusion", where, dict), f"{where}.synthetic_occlusion"
        tables = tuple(str(t) for t in _get(s, "tables", where, list))
        unknown = sorted(set(tables) - set(STUDIES))
        if unknown:
            raise InputError(f"{where}.tables names unknown studies {unknown}; choose from {list(STUDIES)} (params.yaml)")
        return cls(**cls._fields(s, where), synthetic_occlusion=SyntheticOcclusionSettings(
            _get(syn, "images", ws, int), _get(syn, "seed", ws, int)), tables=tables)

    def runs(self, study: str) -> bool:
        """Does this scale run ``study`` (a name in ``frozen_heads.STUDIES``)?"""
        return study in self.tables


@dataclass(frozen=True)
class FewShotSettings:
    """``partial.few_shot``: Table 4.2's shots and fine-tuning budget."""

    shots: tuple[int, ...]
    iters: int
    lr: float


@dataclass(frozen=True)
class PartialSettings(HeadBudget):
    """``scales.<scale>.partial``: CPMask's partially supervised and few-shot heads (notebook 03);
    its heads are scored per category half, so their ``head_config`` has no occlusion bins."""

    split: tuple[str, str]
    ablation_rows: bool
    grabcut_iters: int
    few_shot: FewShotSettings

    @classmethod
    def from_params(cls, params: Mapping[str, Any], scale: str) -> "PartialSettings":
        where, s = f"scales.{scale}.partial", scale_section(dict(params), scale, "partial")
        split = _get(s, "split", where, list)
        if len(split) != 2:
            raise InputError(f"{where}.split must name two halves, got {split!r} (params.yaml)")
        few, fs = _get(s, "few_shot", where, dict), f"{where}.few_shot"
        return cls(**cls._fields(s, where), split=(str(split[0]), str(split[1])),
                   ablation_rows=_get(s, "ablation_rows", where, bool),
                   grabcut_iters=_get(s, "grabcut_iters", where, int),
                   few_shot=FewShotSettings(_ints(few, "shots", fs), _get(few, "iters", fs, int),
                                            float(_get(few, "lr", fs, (int, float)))))

    def few_shot_config(self) -> "FewShotConfig":
        """Table 4.2's fine-tuning budget (``instseg.experiments.partial_supervision.FewShotConfig``)."""
        from instseg.experiments.partial_supervision import FewShotConfig

        return FewShotConfig(shots=self.few_shot.shots, iters=self.few_shot.iters, lr=self.few_shot.lr)


# ------------------------------------------------------------------------------------------------
# datasets


@dataclass(frozen=True)
class Split:
    """One split a notebook reads: a COCO(-with-amodal) JSON and the folder its ``file_name`` s are
    relative to. ``coco_occ_threshold`` set: the split is the COCO-OCC subset of that JSON's
    images, computed (see the module docstring), not a file of its own."""

    json: Path
    images: Path
    coco_occ_threshold: float | None = None


@dataclass(frozen=True)
class DatasetConfig:
    """The files of one dataset as one notebook role reads them, and where its runs live.

    ``root`` is the benchmark folder for OccludedShapes (None for real datasets, whose files
    lie where ``scales.paper.datasets`` says). Splits a role does not read are None.
    """

    name: str
    format: str
    runs: Path
    train: Split | None = None
    val: Split | None = None
    val_occ: Split | None = None
    test: Split | None = None
    root: Path | None = None

    def split(self, name: str) -> Split:
        """The split ``name``; an InputError when this role does not read it."""
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {name!r}")
        split = getattr(self, name)
        if split is None:
            raise InputError(f"dataset {self.name!r} has no {name!r} split in this notebook's configuration")
        return split

    def gt(self, name: str) -> dict:
        """The split's ground truth in our schema (KINS and COCOA converted), checked."""
        from instseg.data.amodal_formats import load_amodal

        return load_amodal(self.split(name).json, self.format)

    def dataset(self, name: str, gt: dict | None = None) -> "CocoInstanceDataset":
        """The split as a torchvision-style dataset (``gt``: its already loaded ground truth)."""
        from instseg.data.dataset import CocoInstanceDataset

        split = self.split(name)
        dataset = CocoInstanceDataset(self.gt(name) if gt is None else gt, split.images)
        dataset.source = str(split.json)  # messages name the file, not "<memory>"
        return dataset

    def val_occ_ids(self, val_gt: dict | None = None) -> list[int]:
        """Image ids of ``val_occ`` inside ``val``: the images of the benchmark's ``val_occ.json``,
        or the COCO-OCC rule applied to ``val_gt`` (default: this dataset's val ground truth)."""
        split = self.split("val_occ")
        if split.coco_occ_threshold is None:
            return [img["id"] for img in self.gt("val_occ")["images"]]
        from instseg.data.occlusion import coco_occ_image_ids

        return coco_occ_image_ids(self.gt("val") if val_gt is None else val_gt, threshold=split.coco_occ_threshold)

    def describe(self) -> dict[str, Any]:
        """Plain paths of every split read, for the provenance record."""
        out: dict[str, Any] = {"name": self.name, "format": self.format, "runs": str(self.runs)}
        for name in SPLITS:
            split = getattr(self, name)
            if split is not None:
                out[name] = {"json": str(split.json), "images": str(split.images)}
                if split.coco_occ_threshold is not None:
                    out[name]["coco_occ_threshold"] = split.coco_occ_threshold
        return out


def benchmark_dataset(data_dir: Path, runs_dir: Path, splits: tuple[str, ...] = SPLITS) -> DatasetConfig:
    """OccludedShapes as ``instseg data build`` writes it: ``annotations/<split>.json``, ``images/``."""
    files = {s: Split(data_dir / "annotations" / f"{s}.json", data_dir / "images") for s in splits}
    return DatasetConfig("occluded_shapes", "coco", runs_dir, root=data_dir, **files)


def real_dataset(params: Mapping[str, Any], scale: str, entry: str, splits: tuple[str, ...], root: Path,
                 runs_dir: Path, coco_occ_threshold: float) -> DatasetConfig:
    """``scales.<scale>.datasets.<entry>`` (train/val json and images, optional test_*, format),
    paths relative to ``root``; ``val_occ`` is the COCO-OCC subset of val, ``test`` falls back to val."""
    where = f"scales.{scale}.datasets"
    entries = scale_section(dict(params), scale, "datasets")
    spec = _get(entries, entry, where, dict)
    where = f"{where}.{entry}"
    fmt = spec.get("format", "auto")
    if fmt not in FORMATS:
        raise InputError(f"{where}.format must be one of {FORMATS}, got {fmt!r} (params.yaml)")

    def path(key: str) -> Path:
        return root / _get(spec, key, where, str)

    files: dict[str, Split] = {}
    for split in splits:
        if split in ("train", "val"):
            files[split] = Split(path(f"{split}_json"), path(f"{split}_images"))
        elif split == "val_occ":
            files[split] = Split(path("val_json"), path("val_images"), coco_occ_threshold)
        else:  # test: COCO test-dev has no public annotations
            source = "test" if "test_json" in spec else "val"
            files[split] = Split(path(f"{source}_json"), path(f"{source}_images"))
    return DatasetConfig(entry, fmt, runs_dir / entry, **files)


# ------------------------------------------------------------------------------------------------
# one notebook


@dataclass(frozen=True)
class NotebookConfig:
    """Everything a notebook reads, resolved: its scale, parameter sections, datasets per role,
    run and report folders. Built without I/O by :meth:`from_params`; :func:`setup` adds the
    ``report`` (which writes the provenance). Sections the notebook does not need are None."""

    name: str
    scale: str
    root: Path
    params: Mapping[str, Any] = field(repr=False)
    report_dir: Path
    interactive: bool
    evaluation: EvaluationSettings
    notebooks: NotebookSettings
    detector: DetectorSettings
    datasets: Mapping[str, DatasetConfig]
    ablation: AblationSettings | None = None
    partial: PartialSettings | None = None
    report: Report | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_params(cls, name: str, params: Mapping[str, Any], scale: str | None = None, *, root: Path,
                    data_dir: str | Path = "data/occluded_shapes", runs_dir: str | Path = "runs",
                    report_dir: str | Path | None = None, interactive: bool = False) -> "NotebookConfig":
        """The configuration of notebook ``name`` at ``scale`` (default: params' ``scale``);
        relative folders are taken from ``root``. Fails with an InputError naming the first
        missing parameter."""
        if name not in NOTEBOOKS:
            raise ValueError(f"unknown notebook {name!r}; known: {', '.join(NOTEBOOKS)}")
        params = dict(params)
        scale = scale or params.get("scale", "cpu")
        preset = scale_params(params, scale)
        root = Path(root)
        data_dir, runs_dir = root / data_dir, root / runs_dir
        evaluation = EvaluationSettings.from_params(params)
        roles, sections = NOTEBOOKS[name]
        datasets = {}
        for role in roles:
            if "datasets" in preset and role in REAL_DATASETS:
                entry, splits = REAL_DATASETS[role]
                datasets[role] = real_dataset(params, scale, entry, splits, root, runs_dir,
                                              evaluation.coco_occ_threshold)
            else:
                datasets[role] = benchmark_dataset(data_dir, runs_dir, BENCHMARK_SPLITS[role])
        return cls(name=name, scale=scale, root=root, params=MappingProxyType(params),
                   report_dir=root / (report_dir or Path("reports") / name), interactive=interactive,
                   evaluation=evaluation, notebooks=NotebookSettings.from_params(params, scale),
                   detector=DetectorSettings.from_params(params, scale), datasets=MappingProxyType(datasets),
                   ablation=AblationSettings.from_params(params, scale) if "ablation" in sections else None,
                   partial=PartialSettings.from_params(params, scale) if "partial" in sections else None)

    @property
    def preset(self) -> dict[str, Any]:
        """``scales.<scale>`` as in params.yaml (what older cells index by key)."""
        return self.params["scales"][self.scale]

    def dataset(self, role: str | None = None) -> DatasetConfig:
        """The dataset of ``role`` (default: the notebook's main one, its first role)."""
        role = role or NOTEBOOKS[self.name][0][0]
        if role not in self.datasets:
            raise ValueError(f"notebook {self.name} reads no {role!r} dataset; its roles: {', '.join(self.datasets)}")
        return self.datasets[role]

    def provenance_params(self) -> dict[str, Any]:
        """What the report's provenance records: the notebook, its scale's preset, the evaluation
        section and the files each role read."""
        return {"notebook": self.name, "scale": self.scale, **self.preset, "evaluation": self.params["evaluation"],
                "data": {role: d.describe() for role, d in self.datasets.items()}}


def setup(notebook: str, scale: str | None = None, *, data_dir: str | Path = "data/occluded_shapes",
          runs_dir: str | Path = "runs", report_dir: str | Path | None = None, interactive: bool = True,
          params_path: str | Path | None = None) -> NotebookConfig:
    """The notebook's configuration with its report opened; called by every notebook in place of a
    copied preamble. Arguments are the notebook's papermill parameters; the environment overrides
    them as nbval needs (``make test`` runs notebooks unparameterised): ``INSTSEG_SCALE``,
    ``INSTSEG_DATA``, ``INSTSEG_RUNS``, ``INSTSEG_REPORTS`` (the report goes to
    ``$INSTSEG_REPORTS/<notebook>``) and ``INSTSEG_HEADLESS=1`` (no live widgets)."""
    root = repo_root()
    params = load_params(params_path or root / "params.yaml")
    env = os.environ
    if "INSTSEG_REPORTS" in env:
        report_dir = Path(env["INSTSEG_REPORTS"]) / notebook
    config = NotebookConfig.from_params(
        notebook, params, env.get("INSTSEG_SCALE", scale), root=root, data_dir=env.get("INSTSEG_DATA", data_dir),
        runs_dir=env.get("INSTSEG_RUNS", runs_dir), report_dir=report_dir,
        interactive=interactive and env.get("INSTSEG_HEADLESS") != "1")
    config = replace(config, report=Report(config.report_dir, config.provenance_params()))
    print(f"{notebook}: scale {config.scale}, data "
          + ", ".join(f"{role}={d.name}" for role, d in config.datasets.items())
          + f", commit {config.report.provenance['git']['commit']}")
    return config
