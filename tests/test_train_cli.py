"""End to end through the CLI on a user's COCO file: non-contiguous category ids, mixed
polygon/RLE masks, an image without annotations and no occluder field — no preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instseg.cli import main
from instseg.data.coco_json import mask_to_rle

REPO = Path(__file__).resolve().parents[1]


def _user_dataset(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, anns = [], []
    for k in range(4):
        pixels = (rng.random((64, 64, 3)) * 60).astype(np.uint8)
        pixels[8:30, 8:30] = (200, 40, 40)
        pixels[20:50, 24:56] = (40, 200, 40)
        mode = "RGB" if k % 2 == 0 else "L"
        Image.fromarray(pixels).convert(mode).save(root / "images" / f"img{k}.png")
        images.append({"id": 100 + k, "file_name": f"img{k}.png", "height": 64, "width": 64})
        if k == 3:
            continue  # an image without annotations
        anns.append({"id": 10 * k + 1, "image_id": 100 + k, "category_id": 5, "iscrowd": 0, "area": 400.0,
                     "bbox": [8, 8, 22, 22], "segmentation": [[8, 8, 30, 8, 30, 20, 24, 20, 24, 30, 8, 30]]})
        green = np.zeros((64, 64), np.uint8)
        green[20:50, 24:56] = 1
        anns.append({"id": 10 * k + 2, "image_id": 100 + k, "category_id": 17, "iscrowd": 0, "area": 960.0,
                     "bbox": [24, 20, 32, 30], "segmentation": mask_to_rle(green)})
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": 5, "name": "red"}, {"id": 17, "name": "green"}]}
    path = root / "gt.json"
    path.write_text(json.dumps(gt))
    return path


@pytest.mark.parametrize("model,detector", [("bcnet", "frcnn"), ("maskrcnn", "fcos")])
def test_train_predict_eval_on_user_data(tmp_path: Path, model: str, detector: str,
                                         capsys: pytest.CaptureFixture) -> None:
    gt = _user_dataset(tmp_path)
    run, images = tmp_path / "run", str(tmp_path / "images")
    params = str(REPO / "params.yaml")
    assert main(["train", "--model", model, "--detector", detector, "--train-json", str(gt), "--train-images", images,
                 "--val-json", str(gt), "--val-images", images, "--out", str(run), "--scale", "smoke",
                 "--params", params]) == 0
    assert (run / "checkpoints" / "model_final.pt").is_file() and (run / "metrics.csv").is_file()
    metrics = json.loads((run / "val_metrics.json").read_text())
    assert set(metrics) == {"segm", "bbox", "plateau"} and "AP" in metrics["segm"]
    curve = (run / "val_loss.csv").read_text().splitlines()  # the validation loss the plateau check read
    assert curve[0] == "iteration,val_loss" and int(curve[-1].split(",")[0]) == 6
    assert metrics["plateau"]["points"] >= 1 and isinstance(metrics["plateau"]["passed"], bool)
    results = tmp_path / "results.json"
    assert main(["predict", "--checkpoint", str(run), "--images", images, "--json", str(gt), "--out", str(results),
                 "--viz", str(tmp_path / "viz"), "--extra-maps"]) == 0
    records = json.loads(results.read_text())
    assert {r["category_id"] for r in records} <= {5, 17}
    assert {r["image_id"] for r in records} <= {100, 101, 102, 103}
    assert len(list((tmp_path / "viz").glob("*.png"))) == 4
    plain = tmp_path / "plain.json"  # without --extra-maps the bilayer maps are neither computed nor written
    assert main(["predict", "--checkpoint", str(run), "--images", images, "--json", str(gt), "--out", str(plain)]) == 0
    assert not any(key.startswith("occlu") for r in json.loads(plain.read_text()) for key in r)
    if model == "bcnet":
        assert any(key.startswith("occluder") for r in records for key in r)
    capsys.readouterr()
    assert main(["eval", "--gt", str(gt), "--dt", str(results), "--out", str(tmp_path / "m.json")]) == 0
    assert "AP" in json.loads((tmp_path / "m.json").read_text())


def test_predict_on_a_bare_image_folder_and_bad_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gt = _user_dataset(tmp_path)
    run = tmp_path / "run"
    main(["train", "--model", "bcnet", "--train-json", str(gt), "--train-images", str(tmp_path / "images"),
          "--out", str(run), "--scale", "smoke", "--params", str(REPO / "params.yaml"), "--max-iters", "2"])
    out = tmp_path / "folder_results.json"
    assert main(["predict", "--checkpoint", str(run / "checkpoints" / "model_final.pt"),
                 "--images", str(tmp_path / "images"), "--out", str(out)]) == 0
    assert {r["image_id"] for r in json.loads(out.read_text())} <= {1, 2, 3, 4}
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    (tmp_path / "run.json").write_text((run / "run.json").read_text())
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(broken), "--images", str(tmp_path / "images"), "--out", str(out)]) == 2
    assert "broken.pt: cannot read checkpoint" in capsys.readouterr().err
