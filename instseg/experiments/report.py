"""Writing a notebook's report: tables (csv + md), figures, metrics, and the provenance
(git commit, parameters, package versions) that every report must carry."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

PACKAGES = ("instseg", "torch", "torchvision", "numpy", "pycocotools", "faster-coco-eval", "scikit-image",
            "scikit-learn", "opencv-python-headless", "pillow", "pandas", "matplotlib", "papermill", "dvc")


def repo_root(start: str | Path | None = None) -> Path:
    """The nearest parent holding params.yaml, so notebooks run from any working directory."""
    here = Path(start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "params.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no params.yaml above {here}")


def git_commit(root: Path) -> dict[str, Any]:
    def run(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return {"commit": run("rev-parse", "HEAD"), "dirty": bool(run("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance(params: dict[str, Any], root: Path | None = None) -> dict[str, Any]:
    """Commit, parameters, package versions and platform a result was made with."""
    root = root or repo_root()
    return {"git": git_commit(root), "params": params, "packages": package_versions(),
            "python": sys.version.split()[0], "platform": platform.platform()}


class Report:
    """A report folder: ``tables/``, ``figures/``, ``metrics.json`` and ``provenance.json``."""

    def __init__(self, directory: str | Path, params: dict[str, Any]):
        self.dir = Path(directory)
        (self.dir / "tables").mkdir(parents=True, exist_ok=True)
        (self.dir / "figures").mkdir(parents=True, exist_ok=True)
        self.provenance = provenance(params)
        self._write_json(self.dir / "provenance.json", self.provenance)

    @staticmethod
    def _write_json(path: Path, data: Any) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
        tmp.replace(path)

    def table(self, df: pd.DataFrame, name: str, caption: str = "") -> pd.DataFrame:
        """Write ``tables/<name>.csv`` and ``.md`` (caption + provenance line on top)."""
        df.to_csv(self.dir / "tables" / f"{name}.csv", index=False)
        git = self.provenance["git"]
        header = f"{caption}\n\n" if caption else ""
        footer = f"\n\n_made at commit {git['commit']}{' (dirty)' if git['dirty'] else ''}_\n"
        (self.dir / "tables" / f"{name}.md").write_text(header + df.to_markdown(index=False, floatfmt=".4g") + footer)
        return df

    def figure(self, fig: Any, name: str) -> Path:
        path = self.dir / "figures" / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        return path

    def metrics(self, metrics: dict[str, Any]) -> None:
        """``metrics.json`` for ``dvc metrics show`` (numbers only, nested by name)."""
        self._write_json(self.dir / "metrics.json", metrics)
