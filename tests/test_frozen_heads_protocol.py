"""The ablation protocol: rows that are one configuration, a run that is deterministic and trains
shared rows once, tidy metric rows whose pivot is the wide table, and caches and eval inputs shared
between runs, at the smoke scale with a tiny untrained detector."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from instseg.experiments import frozen_heads as fh

CHANNELS = 16
VARIANTS = (fh.TABLE_3_3[0], fh.TABLE_3_2[2], fh.TABLE_3_3[3])  # the last two: one configuration
RUN_COLUMNS = ("variant", "label", "config", "head", "amodal", "seed", "params", "train_seconds", "seconds_per_iter",
               "final_loss", "loss_curve", "val_curve", "plateau_passed", "plateau_improvement", "plateau",
               "predict_seconds", "eval_seconds")


def test_shared_rows_are_one_configuration() -> None:
    assert fh.config_key(fh.TABLE_3_2[1]) == fh.config_key(fh.TABLE_3_1[3])
    assert fh.config_key(fh.TABLE_3_2[2]) == fh.config_key(fh.TABLE_3_3[3])
    assert fh.config_key(fh.TABLE_3_3[0]) != fh.config_key(fh.TABLE_3_3[1])
    assert len(fh.unique_variants(fh.TABLE_3_1 + fh.TABLE_3_2 + fh.TABLE_3_3)) == 9
    assert len(fh.unique_variants(fh.TABLE_3_5 + fh.TABLE_3_6 + fh.TABLE_3_5)) == 3
    with pytest.raises(ValueError, match="named"):
        fh.unique_variants([fh.TABLE_3_3[0], fh.HeadVariant(fh.TABLE_3_3[0].name, "gcn")])

@pytest.fixture(scope="module")
def setting(smoke_frozen: dict) -> tuple:
    data = smoke_frozen
    occ_ids = [img["id"] for img in data["val_gt"]["images"][:8]]
    eval_sets = {"val": (data["val_gt"], data["val"]), "val_occ": (data["val_gt"], data["val"], occ_ids)}
    cfg = fh.AblationConfig(iters=3, batch_rois=8, channels=CHANNELS, train_images=6, boxes="gt")
    return data["detector"], data["train"], eval_sets, cfg


@pytest.fixture(scope="module")
def ablation(setting: tuple) -> fh.AblationRun:
    return fh.run_ablation(VARIANTS, [0], *setting)


def _untimed(runs: pd.DataFrame) -> pd.DataFrame:
    return runs.drop(columns=[c for c in runs.columns if c.endswith("seconds") or c == "seconds_per_iter"])


def test_run_ablation_is_deterministic_and_trains_shared_rows_once(ablation: fh.AblationRun, setting: tuple) -> None:
    first, eval_sets = ablation.runs, setting[2]
    second = fh.run_ablation(VARIANTS, [0], *setting).runs
    assert list(first["variant"]) == [v.name for v in VARIANTS]
    pd.testing.assert_frame_equal(_untimed(first), _untimed(second))
    shared = first.set_index("variant").loc[[fh.TABLE_3_2[2].name, fh.TABLE_3_3[3].name]]
    assert shared["config"].nunique() == 1 and shared["val_AP"].nunique() == 1
    for column in ("val_AP", "val_AP50", "val_AP75", "val_occ_AP", "val_AP_occ_0_0.1", "params", "train_seconds"):
        assert column in first.columns
    assert first["params"].iloc[0] < first["params"].iloc[1]
    heads = ablation.heads
    assert set(ablation.results) == {(v.name, 0, s) for v in VARIANTS for s in eval_sets}
    assert set(heads) == {(v.name, 0) for v in VARIANTS}
    assert heads[(fh.TABLE_3_2[2].name, 0)] is heads[(fh.TABLE_3_3[3].name, 0)]  # trained once
    assert not heads[(VARIANTS[0].name, 0)].training
    assert list(ablation.variants) == [v.name for v in VARIANTS]


def test_the_wide_table_is_the_pivot_of_the_tidy_rows(ablation: fh.AblationRun) -> None:
    tidy, runs = ablation.tidy, ablation.runs
    assert list(tidy.columns) == list(fh.TIDY_COLUMNS)
    assert not tidy.duplicated(["variant", "seed", "eval_set", "metric"]).any()
    assert set(tidy["eval_set"]) == {"val", "val_occ"} and {"AP", "AP50", "AP_occ_0_0.1"} <= set(tidy["metric"])
    pivot = tidy.pivot(index=["variant", "seed"], columns=["eval_set", "metric"], values="value")
    pivot.columns = [f"{eval_set}_{metric}" for eval_set, metric in pivot.columns]
    assert set(runs.columns) == set(RUN_COLUMNS) | set(pivot.columns)
    wide = runs.set_index(["variant", "seed"])
    pd.testing.assert_frame_equal(wide[pivot.columns], pivot.loc[wide.index])
    assert tidy.groupby("variant")["config"].unique().map(list).to_dict() == {
        name: [config] for name, config in wide["config"].droplevel("seed").items()}


def test_given_caches_and_inputs_are_shared_not_filled(ablation: fh.AblationRun, setting: tuple) -> None:
    train_key, val_key = ("auto", False), ("val", "auto", False)
    assert set(ablation.caches) == {train_key, val_key}
    given = {train_key: ablation.caches[train_key]}
    again = fh.run_ablation(VARIANTS[:1], [0], *setting, caches=given, inputs=ablation.inputs)
    assert again.caches[train_key] is given[train_key] and again.inputs is ablation.inputs
    assert len(again.inputs._features) == 1  # one backbone pass over val served both runs
    assert list(given) == [train_key]  # the caller's mapping is left as it was; the run's holds what it built
    assert torch.equal(again.caches[val_key].features, ablation.caches[val_key].features)
    pd.testing.assert_frame_equal(_untimed(again.runs), _untimed(ablation.runs.iloc[:1]))
