"""Partial supervision: category splits and few-shot draws as data, and the guarantee that no
novel-category mask reaches a mask loss, end to end (detector mask branch, CLI) and on the frozen
detector's ROI cache."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign

from instseg.cli import main
from instseg.data.occluded_shapes import categories_json
from instseg.data.splits import COCO_VOC_CATEGORY_IDS, category_split, few_shot_annotation_ids, parse_mask_categories
from instseg.errors import InputError
from instseg.experiments import partial_supervision as ps
from instseg.experiments.frozen_heads import (
    AblationConfig,
    EvalInputs,
    HeadVariant,
    cache_roi_features,
    run_ablation,
    train_head,
)
from instseg.models.mask_branch import RoIMaskBranch
from instseg.models.mask_heads import MASK_HEADS, FCNMaskHead, mask_head_targets

COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]  # COCO's 80 ids


def test_voc_split_of_coco_ids() -> None:
    cats = [{"id": i, "name": str(i)} for i in COCO_IDS]
    assert len(COCO_IDS) == 80
    base, novel = category_split(cats, "voc")
    assert base == list(COCO_VOC_CATEGORY_IDS) and len(novel) == 60 and not set(base) & set(novel)
    assert category_split(cats, "nonvoc") == (novel, base)
    assert category_split(cats, "all") == (sorted(COCO_IDS), [])
    with pytest.raises(InputError, match="missing"):
        category_split(cats[:10], "voc")


def test_occluded_shapes_split_shares_structure_but_not_shape() -> None:
    cats = categories_json()
    a, b = category_split(cats, "A")
    assert category_split(cats, "B") == (b, a) and len(a) == len(b) == 5
    by_id = {c["id"]: c for c in cats}
    structures = [{by_id[i]["supercategory"] for i in half} for half in (a, b)]
    assert len(structures[0] & structures[1]) >= 3  # structural commonalities cross the split
    assert not {by_id[i]["shape"] for i in a} & {by_id[i]["shape"] for i in b}  # every outline is its own category
    assert all("appearance" not in c for c in cats)  # colour and texture are drawn per image, not per category
    with pytest.raises(InputError, match="unknown split 'C'.*A, B"):
        category_split(cats, "C")


def test_mask_category_specs() -> None:
    cats = categories_json()
    assert parse_mask_categories("none", cats) == []
    assert parse_mask_categories("3, 1", cats) == [1, 3]
    assert parse_mask_categories("B", cats) == [6, 7, 8, 9, 10]
    with pytest.raises(InputError, match=r"ids \[42\]"):
        parse_mask_categories("1,42", cats)


def _gt(counts: dict[int, int]) -> dict:
    anns, k = [], 0
    for category, n in counts.items():
        for _ in range(n):
            k += 1
            anns.append({"id": 1000 + 7 * k, "category_id": category, "iscrowd": 0})
    anns.append({"id": 5, "category_id": 1, "iscrowd": 1})
    return {"annotations": anns}


def test_few_shot_draw_is_deterministic_per_category_and_seed() -> None:
    gt = _gt({1: 30, 2: 25, 3: 40})
    draw = few_shot_annotation_ids(gt, [1, 2], 10, seed=0)
    assert draw == few_shot_annotation_ids(gt, [2, 1], 10, seed=0) and len(draw) == 20
    by_id = {a["id"]: a for a in gt["annotations"]}
    assert sorted(by_id[i]["category_id"] for i in draw) == [1] * 10 + [2] * 10
    assert 5 not in draw  # crowd annotations are never drawn
    assert draw != few_shot_annotation_ids(gt, [1, 2], 10, seed=1)
    # another category in the draw leaves category 1's instances unchanged
    only_1 = set(few_shot_annotation_ids(gt, [1], 10, seed=0))
    assert only_1 <= set(few_shot_annotation_ids(gt, [1, 3], 10, seed=0))
    with pytest.raises(InputError, match="category 2 has 25 annotated instances, fewer than 30"):
        few_shot_annotation_ids(gt, [2], 30, seed=0)


class SpyHead(FCNMaskHead):
    """Records every target batch its loss sees."""

    seen: list[dict[str, torch.Tensor]] = []

    def loss(self, outputs, targets):  # noqa: ANN001, ANN201 - the head interface
        SpyHead.seen.append({k: v.detach().clone() for k, v in targets.items()})
        return super().loss(outputs, targets)


def test_mask_branch_trains_on_supervised_instances_only() -> None:
    masks = torch.zeros(3, 64, 64, dtype=torch.bool)
    masks[0, 8:24, 8:24] = True  # base (label 1)
    masks[1, 10:40, 12:50] = True  # novel (label 2), overlapping the base instance
    masks[2, 40:60, 40:60] = True  # base (label 1)
    boxes = torch.tensor([[8.0, 8, 24, 24], [12, 10, 50, 40], [40, 40, 60, 60]])
    target = {"boxes": boxes, "labels": torch.tensor([1, 2, 1]), "masks": masks}
    proposals = torch.cat([boxes, boxes + 1])
    matched = torch.tensor([0, 1, 2, 0, 1, 2])
    pool = MultiScaleRoIAlign(["0"], 14, 2)
    features = {"0": torch.randn(1, 8, 16, 16)}
    for rule in ("none", "reference"):
        SpyHead.seen = []
        branch = RoIMaskBranch(SpyHead(8, 8), pool, occluder_rule=rule, mask_labels=[1])
        branch.losses(features, [(64, 64)], [proposals], [matched], [target])
        (seen,) = SpyHead.seen
        keep = torch.tensor([0, 2, 3, 5])  # proposals of instances 0 and 2
        base_only = mask_head_targets(masks[[0, 2]], boxes[[0, 2]], proposals[keep], torch.tensor([0, 1, 0, 1]),
                                      occluder="none")
        assert torch.equal(seen["mask"], base_only["mask"])
    # and the occluder targets are built from the supervised instances alone
    branch = RoIMaskBranch(SpyHead(8, 8), pool, occluder_rule="reference", mask_labels=[1])
    subset, _, sub_target = branch._supervised(proposals, matched, target)
    assert len(subset) == 4 and torch.equal(sub_target["labels"], torch.tensor([1, 1]))
    assert torch.equal(sub_target["masks"], masks[[0, 2]])


def test_no_novel_mask_reaches_the_loss_of_a_frozen_detector_head(smoke_frozen: dict,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Novel ROIs get a sentinel target in the full cache: the head trained on the base subset
    never sees one."""
    frcnn_detector, smoke_train_set = smoke_frozen["detector"], smoke_frozen["train"]
    cache = cache_roi_features(frcnn_detector, smoke_train_set, range(len(smoke_train_set)), 1, 0, "none")
    base = [1, 2, 3, 4, 5]
    novel = ~torch.isin(cache.category_ids, torch.tensor(base))
    assert novel.any() and (~novel).any()
    sentinel = (torch.arange(28)[:, None] + torch.arange(28)) % 2 == 0
    cache.targets["mask"][novel] = sentinel
    subset = cache.of_categories(base)
    assert set(subset.category_ids.tolist()) <= set(base) and len(subset) == int((~novel).sum())
    SpyHead.seen = []
    monkeypatch.setitem(MASK_HEADS, "spy", SpyHead)
    train_head(HeadVariant("spy", "spy", occluder_rule="none", mask_categories=tuple(base)), subset, 20, 8, 1e-3, 0, 16)
    assert len(SpyHead.seen) == 20
    assert not any((t["mask"].bool() == sentinel).all(dim=(1, 2)).any() for t in SpyHead.seen)
    with pytest.raises(ValueError, match="occluder_rule='none'"):
        HeadVariant("bad", "bcnet", mask_categories=(1,))
    reference = cache_roi_features(frcnn_detector, smoke_train_set, [0, 1], 1, 0, "reference")
    with pytest.raises(ValueError, match="occluder targets"):
        reference.of_categories(base)


def test_cli_trains_cpmask_with_partial_supervision_and_a_box_only_detector(tmp_path: Path, smoke_dir: Path) -> None:
    ann, images = smoke_dir / "annotations", str(smoke_dir / "images")
    common = ["--train-json", str(ann / "train.json"), "--train-images", images, "--val-json", str(ann / "val.json"),
              "--val-images", images, "--scale", "smoke", "--params", str(Path(__file__).parents[1] / "params.yaml"),
              "--max-iters", "2"]
    assert main(["train", "--model", "cpmask", "--mask-categories", "A", "--out", str(tmp_path / "a"), *common]) == 0
    spec = json.loads((tmp_path / "a" / "run.json").read_text())
    assert spec["build"]["mask_labels"] == [1, 2, 3, 4, 5] and spec["build"]["mask_head"] == "cpmask"
    assert set(json.loads((tmp_path / "a" / "val_metrics.json").read_text())) == {"segm", "bbox", "plateau"}
    assert main(["train", "--model", "maskrcnn", "--mask-categories", "none", "--out", str(tmp_path / "boxes"),
                 *common]) == 0
    assert set(json.loads((tmp_path / "boxes" / "val_metrics.json").read_text())) == {"bbox", "plateau"}
    assert main(["predict", "--checkpoint", str(tmp_path / "a"), "--images", images, "--json", str(ann / "val.json"),
                 "--out", str(tmp_path / "r.json")]) == 0


def test_partial_supervision_and_few_shot_tables_on_the_smoke_benchmark(smoke_frozen: dict) -> None:
    """Both directions, oracles and GrabCut scored on novel categories only; few-shot rows for
    every (shots, method, seed)."""
    dirs = ps.directions(categories_json(), ("A", "B"))
    assert [d.name for d in dirs] == ["A → B", "B → A"] and dirs[0].paper_name == "voc → non-voc"
    cfg = AblationConfig(iters=3, batch_rois=8, channels=16, jitter_per_gt=1, bins=None)
    inputs = EvalInputs(smoke_frozen["detector"], cfg.boxes)
    eval_sets = ps.novel_eval_sets(smoke_frozen["val_gt"], smoke_frozen["val"], dirs)
    run = run_ablation(ps.partial_variants(dirs), [0], smoke_frozen["detector"], smoke_frozen["train"], eval_sets,
                       cfg, inputs=inputs)
    assert len(run.runs) == 6 and "novel_B_APm" in run.runs and run.inputs is inputs
    rows = ps.long_rows(run, dirs)
    assert len(rows) == 8 and set(rows["direction"]) == {"A → B", "B → A"}
    assert set(rows[rows["direction"] == "A → B"]["variant"]) == {"fcn_A", "cpmask_A", "fcn_oracle", "cpmask_oracle"}
    # the same numbers as the wide table's columns of each direction's novel set
    for d in dirs:
        mine = rows[rows["direction"] == d.name].set_index(["variant", "seed"])
        wide = run.runs.set_index(["variant", "seed"]).loc[mine.index]
        for m in ps.METRICS:
            pd.testing.assert_series_equal(mine[m], wide[f"novel_{d.novel_name}_{m}"], check_names=False)
    heads, caches = run.heads, run.caches
    grab = ps.grabcut_rows(inputs, smoke_frozen["val"], smoke_frozen["val_gt"], dirs)
    assert list(grab["direction"]) == ["A → B", "B → A"] and grab["AP"].notna().all()
    variants = {v.head: v for v in ps.partial_variants(dirs[1:])[:2]}
    base = {0: {"fcn": heads[("fcn_B", 0)], "cpmask": heads[("cpmask_B", 0)]}}
    few = ps.run_few_shot(inputs, smoke_frozen["train_gt"], caches[("none", False)], base, dirs[1],
                          eval_sets["novel_A"], [0], cfg, ps.FewShotConfig(shots=(1, 2), iters=2), variants)
    assert len(few) == 6 and set(few["method"]) == {"Mask R-CNN-ft", "CPMask (fine-tuned)", "CPMask (no base)"}
    assert list(few.groupby("shots")["instances"].first()) == [5, 10]
    assert len(inputs._features) == 1  # one backbone pass over val served every evaluation above
    with pytest.raises(ValueError, match="boxes='detector', not 'gt'"):
        ps.run_few_shot(inputs, smoke_frozen["train_gt"], caches[("none", False)], base, dirs[1], eval_sets["novel_A"],
                        [0],
                        AblationConfig(boxes="gt"), ps.FewShotConfig(), variants)
    with pytest.raises(ValueError, match="another detector"):
        run_ablation(ps.partial_variants(dirs), [0], torch.nn.Identity(), smoke_frozen["train"], eval_sets, cfg,
                     inputs=inputs)
