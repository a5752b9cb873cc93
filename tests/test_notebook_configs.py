"""Every notebook's configuration builds at every scale of params.yaml, and reads the files README
promises: OccludedShapes at smoke/cpu, the real datasets of ``scales.paper.datasets`` at paper.
Fast: no data, no training; only the paths the notebooks would read are checked."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from instseg.config import load_params
from instseg.errors import InputError
from instseg.experiments.setup import NOTEBOOKS, NotebookConfig, setup

REPO = Path(__file__).resolve().parents[1]
PARAMS = load_params(REPO / "params.yaml")
SCALES = sorted(PARAMS["scales"])


def build(name: str, scale: str, params: dict = PARAMS, **kwargs) -> NotebookConfig:
    return NotebookConfig.from_params(name, params, scale, root=REPO, **kwargs)


def test_params_have_the_three_scales() -> None:
    assert {"smoke", "cpu", "paper"} <= set(SCALES)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_every_notebook_configures_at_every_scale(name: str, scale: str) -> None:
    """What the notebooks' setup cells build, without touching data: sections, head budgets, paths."""
    nb = build(name, scale)
    assert nb.scale == scale and nb.report is None and nb.preset is PARAMS["scales"][scale]
    assert nb.report_dir == REPO / "reports" / name
    assert nb.notebooks.n_examples > 0 and nb.detector.head_channels > 0
    if name in ("01_bcnet_occlusion", "02_bcnet_amodal"):
        cfg = nb.ablation.head_config(nb.detector.head_channels, nb.evaluation.occlusion_bins,
                                      boxes="gt" if name == "02_bcnet_amodal" else "detector")
        assert cfg.iters == nb.preset["ablation"]["iters"] and cfg.channels == nb.detector.head_channels
        assert len(nb.ablation.seeds) >= 2 and nb.ablation.synthetic_occlusion.images > 0
    if name == "03_cpmask_partial_supervision":
        assert nb.partial.head_config(nb.detector.head_channels).bins is None
        assert nb.partial.few_shot_config().shots == tuple(nb.preset["partial"]["few_shot"]["shots"])
    real = "datasets" in nb.preset and name != "00_benchmark"
    for role, data in nb.datasets.items():
        splits = [s for s in ("train", "val", "val_occ", "test") if getattr(data, s) is not None]
        assert splits, role
        for split in splits:
            files = data.split(split)
            assert files.json.suffix == ".json" and files.images.is_absolute()
        if not real:
            assert data.name == "occluded_shapes" and data.runs == REPO / "runs"
            assert all(data.split(s).json == REPO / "data/occluded_shapes/annotations" / f"{s}.json" for s in splits)
            assert data.val_occ is None or data.val_occ.coco_occ_threshold is None  # its own val_occ.json
        else:
            entry = PARAMS["scales"][scale]["datasets"][data.name]
            assert data.runs == REPO / "runs" / data.name and data.root is None
            assert data.format == entry.get("format", "auto")
            if data.train is not None:
                assert data.train.json == REPO / entry["train_json"]
                assert data.train.images == REPO / entry["train_images"]
            if data.val is not None:
                assert data.val.json == REPO / entry["val_json"] and data.val.images == REPO / entry["val_images"]
    json.dumps(nb.provenance_params(), default=str)  # what the report records


def test_paper_scale_reads_the_real_datasets() -> None:
    coco = PARAMS["scales"]["paper"]["datasets"]["coco"]
    main = build("01_bcnet_occlusion", "paper").dataset()
    assert main.name == "coco" and main.train.json == REPO / coco["train_json"]
    # COCO-OCC: the rule on val2017 (the official 1,005-image list is not released), not a file of its own
    assert main.val_occ.json == main.val.json and main.val_occ.images == main.val.images
    assert main.val_occ.coco_occ_threshold == PARAMS["evaluation"]["coco_occ_threshold"]
    amodal = build("02_bcnet_amodal", "paper")
    assert [amodal.dataset(r).name for r in ("table_3_5", "table_3_6", "table_3_8")] == ["cocoa", "kins", "coco"]
    assert amodal.dataset("table_3_5").format == "cocoa" and amodal.dataset("table_3_6").format == "kins"
    assert amodal.dataset("table_3_8").test.json == REPO / coco["val_json"]  # test-dev has no public labels
    partial = build("03_cpmask_partial_supervision", "paper")
    assert partial.dataset().name == "coco" and partial.partial.split == ("voc", "nonvoc")
    assert build("00_benchmark", "paper").dataset().name == "occluded_shapes"


def test_a_missing_section_names_itself() -> None:
    """Today's paper failure, as a clear error instead of a KeyError halfway through a notebook."""
    params = copy.deepcopy(PARAMS)
    del params["scales"]["paper"]["ablation"]
    with pytest.raises(InputError, match=r"scales\.paper\.ablation is missing"):
        build("01_bcnet_occlusion", "paper", params)
    build("03_cpmask_partial_supervision", "paper", params)  # 03 does not read it
    del params["scales"]["paper"]["datasets"]["kins"]["val_json"]
    with pytest.raises(InputError, match=r"scales\.paper\.datasets\.kins\.val_json is missing"):
        build("02_bcnet_amodal", "paper", params)
    params["scales"]["paper"]["partial"]["seeds"] = []
    with pytest.raises(InputError, match=r"scales\.paper\.partial\.seeds"):
        build("03_cpmask_partial_supervision", "paper", params)


def test_studies_per_scale_always_train_the_headline_rows() -> None:
    """``ablation.tables`` picks notebook 01's studies per scale; smoke (nbval) and paper run them all,
    the headline's four rows train whatever the list says, and an unknown study names itself."""
    from instseg.experiments import frozen_heads as fh

    for scale in ("smoke", "paper"):
        assert set(build("01_bcnet_occlusion", scale).ablation.tables) == set(fh.STUDIES)
    headline = [v.name for v in fh.HEADLINE_ROWS]
    assert [v.name for v in fh.ablation_variants(())] == headline
    everything = fh.ablation_variants(fh.STUDIES)
    assert [v.name for v in everything][:4] == headline
    assert {v.name for v in everything} == {v.name for t in fh.TABLES.values() for v in t}
    assert len({v.name for v in everything}) == len(everything)  # a row in two tables appears once
    only_32 = {v.name for v in fh.ablation_variants(["table_3_2"])}
    assert only_32 == set(headline) | {v.name for v in fh.TABLE_3_2}
    with pytest.raises(ValueError, match="table_3_9"):
        fh.ablation_variants(["table_3_9"])
    params = copy.deepcopy(PARAMS)
    params["scales"]["cpu"]["ablation"]["tables"] = ["table_3_1", "table_3_9"]
    with pytest.raises(InputError, match=r"scales\.cpu\.ablation\.tables names unknown studies \['table_3_9'\]"):
        build("01_bcnet_occlusion", "cpu", params)
    del params["scales"]["cpu"]["ablation"]["tables"]
    with pytest.raises(InputError, match=r"scales\.cpu\.ablation\.tables is missing"):
        build("02_bcnet_amodal", "cpu", params)


def test_coco_occ_val_occ_is_computed_from_val(tmp_path: Path) -> None:
    """At a scale with datasets, val_occ ids come from the COCO-OCC rule on the val file."""
    gt = {"images": [{"id": i, "file_name": f"{i}.png", "height": 20, "width": 20} for i in (1, 2)],
          "categories": [{"id": 1, "name": "x"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100,
                           "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]], "iscrowd": 0},
                          {"id": 2, "image_id": 1, "category_id": 1, "bbox": [5, 0, 10, 10], "area": 100,
                           "segmentation": [[5, 0, 15, 0, 15, 10, 5, 10]], "iscrowd": 0},
                          {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 4, 4], "area": 16,
                           "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]], "iscrowd": 0}]}
    (tmp_path / "val.json").write_text(json.dumps(gt))
    params = copy.deepcopy(PARAMS)
    files = {"train_json": str(tmp_path / "val.json"), "train_images": str(tmp_path),
             "val_json": str(tmp_path / "val.json"), "val_images": str(tmp_path)}
    params["scales"]["paper"]["datasets"]["coco"] = {"format": "coco", **files}
    main = build("01_bcnet_occlusion", "paper", params).dataset()
    assert main.val_occ_ids() == [1]  # box IoU 1/3 >= 0.2 in image 1; image 2 has one object


def test_setup_honours_papermill_parameters_and_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    for key in ("INSTSEG_SCALE", "INSTSEG_DATA", "INSTSEG_RUNS", "INSTSEG_REPORTS", "INSTSEG_HEADLESS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(REPO)
    nb = setup("01_bcnet_occlusion", "smoke", data_dir=tmp_path / "bench", runs_dir=tmp_path / "runs",
               report_dir=tmp_path / "rep", interactive=True)
    assert (nb.scale, nb.interactive, nb.dataset().root, nb.dataset().runs) == ("smoke", True, tmp_path / "bench",
                                                                               tmp_path / "runs")
    provenance = json.loads((tmp_path / "rep" / "provenance.json").read_text())
    assert provenance["params"]["notebook"] == "01_bcnet_occlusion" and provenance["params"]["scale"] == "smoke"
    assert "01_bcnet_occlusion: scale smoke" in capsys.readouterr().out
    # nbval's environment wins over the parameters, as the old preamble cells did
    monkeypatch.setenv("INSTSEG_SCALE", "paper")
    monkeypatch.setenv("INSTSEG_RUNS", str(tmp_path / "r2"))
    monkeypatch.setenv("INSTSEG_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("INSTSEG_HEADLESS", "1")
    nb = setup("03_cpmask_partial_supervision", "smoke", interactive=True)
    assert (nb.scale, nb.interactive, nb.dataset().name, nb.dataset().runs) == ("paper", False, "coco",
                                                                               tmp_path / "r2" / "coco")
    assert (tmp_path / "reports" / "03_cpmask_partial_supervision" / "provenance.json").is_file()


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebooks_call_setup_after_their_parameters_cell(name: str) -> None:
    """The copied preamble is gone: one setup call, after the papermill `parameters` cell."""
    cells = json.loads((REPO / "notebooks" / f"{name}.ipynb").read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    tagged = [k for k, c in enumerate(code) if "parameters" in c.get("metadata", {}).get("tags", [])]
    calls = [k for k, c in enumerate(code) if f'setup("{name}"' in "".join(c["source"])]
    assert len(tagged) == 1 and len(calls) == 1 and tagged[0] < calls[0]
    sources = "".join("".join(c["source"]) for c in code)
    for copied in ("load_params(", "scale_params(", "os.environ", "Report("):
        assert copied not in sources, copied
    assert all(not c.get("outputs") for c in code), "notebooks are kept without outputs"
