"""Reports carry provenance; paper tables load as data."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import pytest

from instseg.experiments.paper import paper_fact, paper_table
from instseg.experiments.report import Report, repo_root


def test_report_writes_tables_figures_metrics_and_provenance(tmp_path: Path) -> None:
    report = Report(tmp_path / "r", {"scale": "smoke", "lr": 0.01})
    prov = json.loads((tmp_path / "r" / "provenance.json").read_text())
    assert prov["params"] == {"scale": "smoke", "lr": 0.01}
    assert prov["packages"]["torch"].startswith("2.14.1")
    assert len(prov["git"]["commit"] or "") in (0, 40)
    report.table(pd.DataFrame({"a": [1.23456], "b": ["x"]}), "t", "caption")
    assert (tmp_path / "r" / "tables" / "t.csv").read_text().splitlines() == ["a,b", "1.23456,x"]
    md = (tmp_path / "r" / "tables" / "t.md").read_text()
    assert md.startswith("caption") and "1.235" in md and "made at commit" in md
    fig, _ = plt.subplots()
    assert report.figure(fig, "f").is_file()
    report.metrics({"AP": 12.5})
    assert json.loads((tmp_path / "r" / "metrics.json").read_text()) == {"AP": 12.5}


def test_repo_root_finds_params(tmp_path: Path) -> None:
    here = Path(__file__).resolve()
    assert (repo_root(here.parent) / "params.yaml").is_file()
    with pytest.raises(FileNotFoundError):
        repo_root(Path("/"))


def test_paper_tables_load() -> None:
    t31 = paper_table("table_3_1")
    assert list(t31["coco_occ_ap"]) == [29.04, 29.65, 30.18, 30.37]
    assert any("1,005" in f for f in paper_fact("COCO-OCC"))
    with pytest.raises(KeyError):
        paper_table("table_9_9")
