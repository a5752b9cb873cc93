"""Training engine: config validation, LR schedule, data order, atomic checkpoints, bit-exact
resume, and the non-finite-loss stop. All on CPU with the toy model of ``engine_toy``."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import IO

import numpy as np
import pytest
import torch

from engine_toy import ToyDataset, collate, make_model
from instseg.engine import (
    InfiniteBatchSampler,
    NonFiniteLossError,
    TrainConfig,
    Trainer,
    atomic_save,
    load_checkpoint,
    lr_at,
    rng_state,
    seed_everything,
    set_rng_state,
    weights_digest,
)
from instseg.engine import checkpoint as checkpoint_module
from instseg.errors import InputError

BASE = {"max_iters": 10, "batch_size": 4, "lr": 0.05, "warmup_iters": 3, "warmup_factor": 0.1,
        "lr_steps": [7], "gamma": 0.5, "checkpoint_every": 4, "log_every": 5, "seed": 3}


class Interrupt(Exception):
    """Stands in for a crash between two iterations."""


def _crash(*args: object) -> None:
    raise OSError("simulated crash")


def _config(**overrides) -> TrainConfig:
    return TrainConfig.from_dict({**BASE, **overrides})


def _trainer(out_dir: Path, config: TrainConfig, crash_after: int | None = None, augment: bool = True,
             **model_kwargs) -> Trainer:
    def crash(iteration: int, row: dict[str, float]) -> None:
        if iteration == crash_after:
            raise Interrupt

    model = make_model(0, dropout=0.3, **model_kwargs)
    return Trainer(model, ToyDataset(augment=augment), config, out_dir, collate, callbacks=[crash])


def _train(out_dir: Path, config: TrainConfig, resume: bool = False, augment: bool = True) -> torch.nn.Module:
    trainer = _trainer(out_dir, config, augment=augment)
    trainer.train(resume=resume)
    return trainer.model


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _without_timing(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k != "sec_per_iter"} for r in rows]


# --- config ------------------------------------------------------------------------------------

def test_config_from_dict_coerces_yaml_numbers() -> None:
    cfg = TrainConfig.from_dict({"max_iters": "1e3", "lr": "1e-3", "lr_steps": [600, 800.0], "optimizer": "adamw"})
    assert (cfg.max_iters, cfg.lr, cfg.lr_steps, cfg.optimizer) == (1000, 1e-3, (600, 800), "adamw")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(("params", "fragment"), [
    ({"max_iters": 5, "learning_rate": 0.1}, "unknown training parameters ['learning_rate']"),
    ({"lr": 0.1}, "need 'max_iters'"),
    ({"max_iters": 5, "optimizer": "adam"}, "optimizer must be one of"),
    ({"max_iters": 5, "batch_size": 2.5}, "train.batch_size: must be an integer"),
    ({"max_iters": 5, "amp": "yes"}, "train.amp: must be true or false"),
    ({"max_iters": 5, "lr_steps": [8, 4]}, "strictly increasing"),
    ({"max_iters": 5, "warmup_factor": 0, "lr": -1}, "lr must be > 0, got -1.0; warmup_factor must be in (0, 1]"),
    ({"max_iters": 5, "ema_decay": 1}, "ema_decay must be in [0, 1) (0: no average), got 1.0"),
])
def test_config_errors_name_the_file_and_key(params: dict, fragment: str) -> None:
    with pytest.raises(InputError) as info:
        TrainConfig.from_dict(params, "params.yaml")
    assert str(info.value).startswith("params.yaml: ")
    assert fragment in str(info.value)


# --- schedule ----------------------------------------------------------------------------------

def test_lr_at_warmup_then_steps() -> None:
    kw = {"warmup_iters": 4, "warmup_factor": 0.2, "steps": (6, 9), "gamma": 0.1}
    got = [lr_at(i, 1.0, **kw) for i in range(11)]
    expected = [0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01, 0.01]
    assert got == pytest.approx(expected)
    assert lr_at(0, 0.5) == 0.5  # no warmup, no steps: constant
    # A step inside the warmup multiplies with it.
    assert lr_at(2, 1.0, warmup_iters=4, warmup_factor=0.2, steps=(1,), gamma=0.5) == pytest.approx(0.6 * 0.5)


# --- data order --------------------------------------------------------------------------------

def test_sampler_epochs_are_permutations_and_batches_straddle_them() -> None:
    sampler = InfiniteBatchSampler(10, 4, seed=0)
    stream = [i for it in range(5) for i in sampler.global_batch(it)]  # 20 samples = 2 epochs
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:]) == list(range(10))
    assert stream[:10] != stream[10:]  # a new permutation per epoch
    assert stream != [i for it in range(5) for i in InfiniteBatchSampler(10, 4, seed=1).global_batch(it)]


@pytest.mark.parametrize("world", [2, 4])
def test_sampler_shards_union_to_global_batch(world: int) -> None:
    single = iter(InfiniteBatchSampler(10, 8, seed=5))
    ranks = [iter(InfiniteBatchSampler(10, 8, seed=5, rank=r, world_size=world)) for r in range(world)]
    for _ in range(6):
        batch = next(single)
        shards = [next(it) for it in ranks]
        assert all(len(s) == 8 // world for s in shards)
        assert [batch[p::world] for p in range(world)] == shards
        assert sorted(sum(shards, [])) == sorted(batch)


def test_sampler_resumes_at_any_iteration() -> None:
    straight = iter(InfiniteBatchSampler(7, 3, seed=2, rank=1, world_size=3))
    batches = [next(straight) for _ in range(12)]
    for start in (0, 1, 5, 11):
        resumed = iter(InfiniteBatchSampler(7, 3, seed=2, start_iter=start, rank=1, world_size=3))
        assert [next(resumed) for _ in range(12 - start)] == batches[start:]


def test_sampler_rejects_indivisible_global_batch() -> None:
    with pytest.raises(ValueError, match="not divisible"):
        InfiniteBatchSampler(10, 5, seed=0, world_size=2)


# --- RNG and atomic files ----------------------------------------------------------------------

def _draws() -> tuple:
    return (torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.normal(),
            random.random(), random.gauss(0, 1))


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    seed_everything(7)
    np.random.normal()  # leaves a cached gaussian in numpy's state
    random.gauss(0, 1)  # and in python's
    atomic_save(rng_state(), tmp_path / "rng.pt")
    expected = _draws()
    seed_everything(99)
    set_rng_state(load_checkpoint(tmp_path / "rng.pt"))
    assert _draws() == expected


@pytest.mark.parametrize("failure", ["mid_write", "before_rename"])
def test_interrupted_write_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               failure: str) -> None:
    path = tmp_path / "last.pt"
    atomic_save({"iteration": 1, "w": torch.ones(3)}, path)

    def torn_save(obj: object, f: IO[bytes]) -> None:
        f.write(b"PK\x03\x04 half a zip")
        _crash()

    if failure == "mid_write":
        monkeypatch.setattr(checkpoint_module.torch, "save", torn_save)
    else:
        monkeypatch.setattr(checkpoint_module.os, "replace", _crash)
    with pytest.raises(OSError, match="simulated crash"):
        atomic_save({"iteration": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["iteration"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


def test_unreadable_checkpoint_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "torn.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(InputError, match="torn.pt: unreadable checkpoint"):
        load_checkpoint(tmp_path / "torn.pt")


# --- trainer -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("optimizer", "interruption", "ema_decay"),
                         [("sgd", "crash", 0.0), ("adamw", "crash", 0.0), ("sgd", "max_iters", 0.0),
                          ("adamw", "crash", 0.7), ("sgd", "max_iters", 0.7)])
def test_resume_is_bit_exact(tmp_path: Path, optimizer: str, interruption: str, ema_decay: float) -> None:
    """10 straight iterations == 6 (interrupted) + resume to 10, weight for weight and row for row.
    The crash comes 2 iterations after the checkpoint at 4, so those rows must be redone, not
    duplicated; dropout and augmentation make every RNG stream matter. With a weight average the
    run ending at 6 ends on the average, and the resume must continue from the raw weights."""
    extra = ({"grad_clip": 1.0} if optimizer == "adamw" else {}) | ({"ema_decay": ema_decay} if ema_decay else {})
    straight = _train(tmp_path / "straight", _config(optimizer=optimizer, **extra))
    if interruption == "crash":
        with pytest.raises(Interrupt):
            _trainer(tmp_path / "resumed", _config(optimizer=optimizer, **extra), crash_after=5).train()
        assert load_checkpoint(tmp_path / "resumed/checkpoints/last.pt")["iteration"] == 4
        assert len(_rows(tmp_path / "resumed/metrics.csv")) == 6
    else:
        _train(tmp_path / "resumed", _config(optimizer=optimizer, max_iters=6, **extra))
    resumed = _train(tmp_path / "resumed", _config(optimizer=optimizer, **extra), resume=True)
    _assert_same_weights(straight, resumed)
    final = torch.load(tmp_path / "resumed/checkpoints/model_final.pt", weights_only=True)
    for name, value in straight.state_dict().items():
        assert torch.equal(final[name], value), name
    rows = _rows(tmp_path / "resumed/metrics.csv")
    assert [int(r["iteration"]) for r in rows] == list(range(10))
    assert _without_timing(rows) == _without_timing(_rows(tmp_path / "straight/metrics.csv"))


def test_resume_with_loader_workers(tmp_path: Path) -> None:
    """The data order does not depend on the loader: a run resumed with 2 worker processes
    matches one run in the main process (the dataset is deterministic per index; augmentation
    drawn inside workers is reproducible per run but not across a resume)."""
    straight = _train(tmp_path / "straight", _config(max_iters=6), augment=False)
    with pytest.raises(Interrupt):
        _trainer(tmp_path / "resumed", _config(max_iters=6), crash_after=4, augment=False).train()
    resumed = _train(tmp_path / "resumed", _config(max_iters=6, num_workers=2), resume=True, augment=False)
    _assert_same_weights(straight, resumed)


def test_fresh_start_resets_the_metrics_log(tmp_path: Path) -> None:
    _train(tmp_path, _config(max_iters=6))
    _train(tmp_path, _config(max_iters=3))
    assert [int(r["iteration"]) for r in _rows(tmp_path / "metrics.csv")] == [0, 1, 2]


def test_checkpoint_contents_and_metrics_columns(tmp_path: Path) -> None:
    cfg = _config(max_iters=5)
    model = _train(tmp_path, cfg)
    state = load_checkpoint(tmp_path / "checkpoints/last.pt")
    assert set(state) == {"format", "iteration", "model", "optimizer", "scaler", "rng", "config", "settings"}
    assert state["iteration"] == 5 and state["config"] == cfg.to_dict()
    assert set(state["rng"][0]) >= {"torch", "numpy", "python"}
    assert all(torch.equal(state["model"][k], v) for k, v in model.state_dict().items())
    assert state["optimizer"]["state"]  # momentum buffers
    rows = _rows(tmp_path / "metrics.csv")
    assert list(rows[0]) == ["iteration", "lr", "loss", "loss_reg", "loss_aux", "sec_per_iter"]
    for r in rows:
        expected_lr = lr_at(int(r["iteration"]), 0.05, warmup_iters=3, warmup_factor=0.1, steps=[7], gamma=0.5)
        assert float(r["lr"]) == expected_lr
        assert float(r["loss"]) == pytest.approx(float(r["loss_reg"]) + float(r["loss_aux"]), rel=1e-6)
    assert not list((tmp_path / "checkpoints").glob(".*"))  # no temporaries


def test_resume_refuses_a_changed_config(tmp_path: Path) -> None:
    _train(tmp_path, _config(max_iters=4))
    with pytest.raises(InputError, match=r"last.pt: cannot resume: \['lr'\] differ"):
        _train(tmp_path, _config(lr=0.1), resume=True)
    with pytest.raises(InputError, match="checkpoint is at iteration 4, past max_iters=2"):
        _train(tmp_path, _config(max_iters=2), resume=True)


def test_restart_changed_trains_a_changed_run_anew(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A pipeline's run whose schedule or settings changed is trained from scratch, as a fresh run."""
    def train(directory: Path, settings: dict, resume: bool, **overrides) -> Trainer:
        trainer = Trainer(make_model(0), ToyDataset(), _config(max_iters=6, **overrides), directory, collate,
                          run_settings=settings)
        trainer.train(resume=resume, restart_changed=True)
        return trainer

    train(tmp_path / "run", {"base": "a"}, resume=False)
    fresh = train(tmp_path / "fresh", {"base": "b"}, resume=False, lr=0.1)
    with caplog.at_level("WARNING", logger="instseg.engine.trainer"):
        again = train(tmp_path / "run", {"base": "b"}, resume=True, lr=0.1)
    assert "training anew" in caplog.text and "['lr'] differ" in caplog.text
    _assert_same_weights(fresh.model, again.model)
    assert [int(r["iteration"]) for r in _rows(tmp_path / "run/metrics.csv")] == list(range(6))
    caplog.clear()
    with caplog.at_level("WARNING", logger="instseg.engine.trainer"):
        other = train(tmp_path / "run", {"base": "c"}, resume=True, lr=0.1)  # same schedule, other settings
    assert "other settings (['base'])" in caplog.text and "remove the run directory" not in caplog.text
    _assert_same_weights(fresh.model, other.model)


def test_weights_digest_sees_every_value_name_and_dtype() -> None:
    state = make_model(0).state_dict()
    assert weights_digest(state) == weights_digest(make_model(0).state_dict())
    changed = {k: v.clone() for k, v in state.items()}
    changed["reg.bias"][1] += 1e-6
    renamed = {("x" + k if k == "reg.bias" else k): v for k, v in state.items()}
    doubled = {k: v.double() for k, v in state.items()}
    assert len({weights_digest(s) for s in (state, changed, renamed, doubled)}) == 4
    norm = torch.nn.BatchNorm1d(3).state_dict()  # a 0-dim counter and an empty tensor digest too
    counted = dict(norm, num_batches_tracked=torch.tensor(1))
    assert weights_digest(norm) != weights_digest(counted)
    assert weights_digest({"empty": torch.zeros(0)}) != weights_digest({"empty": torch.zeros(0, 2)})


def test_resume_takes_a_key_a_checkpoint_lacks_at_its_default(tmp_path: Path) -> None:
    """A checkpoint written before ``ema_decay`` existed was trained without an average: it resumes
    under the default and is refused under another value."""
    _train(tmp_path, _config(max_iters=4))
    path = tmp_path / "checkpoints/last.pt"
    state = load_checkpoint(path)
    del state["config"]["ema_decay"]
    torch.save(state, path)
    _train(tmp_path, _config(max_iters=6), resume=True)
    assert load_checkpoint(path)["iteration"] == 6
    torch.save(state, path)
    with pytest.raises(InputError, match=r"cannot resume: \['ema_decay'\] differ"):
        _train(tmp_path, _config(max_iters=6, ema_decay=0.9), resume=True)


def test_weight_average_is_the_ema_of_the_steps_weights_validated_kept_and_checkpointed(tmp_path: Path) -> None:
    """e_1 = w_1, e_t = d e_(t-1) + (1 - d) w_t over the weights after each step, buffers included;
    ``eval_model`` holds it during training, the model and model_final.pt end with it, and last.pt
    keeps the raw weights beside it."""
    decay, steps = 0.6, []
    model = make_model(0)
    model.register_buffer("scale", torch.ones(1))

    def record(iteration: int, row: dict[str, float]) -> None:
        model.scale.add_(1.0)  # a buffer that moves: averaged like a weight
        steps.append({k: v.clone() for k, v in model.state_dict().items()})
        if iteration == 2:
            assert torch.allclose(trainer.eval_model.reg.weight, expected(steps)["reg.weight"], rtol=1e-6, atol=1e-7)

    def expected(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        average = dict(states[0])
        for state in states[1:]:
            average = {k: decay * average[k] + (1 - decay) * state[k] for k in average}
        return average

    trainer = Trainer(model, ToyDataset(), _config(max_iters=5, ema_decay=decay), tmp_path, collate, callbacks=[record])
    assert trainer.eval_model is not model
    trainer.train()
    # the buffer moves after the update of its own step, so the average has seen it one step late
    average = expected(steps)
    final = torch.load(tmp_path / "checkpoints/model_final.pt", weights_only=True)
    for name, value in model.state_dict().items():
        if name != "scale":
            assert torch.allclose(value, average[name], rtol=1e-6, atol=1e-7), name
            assert torch.equal(final[name], value) and not torch.equal(value, steps[-1][name]), name
    seen = [{"scale": torch.ones(1)}] + [{"scale": s["scale"]} for s in steps[:-1]]
    assert float(model.scale) == pytest.approx(float(expected(seen)["scale"]))
    state = load_checkpoint(tmp_path / "checkpoints/last.pt")
    assert torch.equal(state["model"]["reg.weight"], steps[-1]["reg.weight"])
    assert torch.equal(state["ema"]["module.reg.weight"], model.reg.weight)
    assert Trainer(make_model(0), ToyDataset(), _config(max_iters=5), None, collate).eval_model is not None


def test_resume_refuses_other_run_settings(tmp_path: Path) -> None:
    def train(settings: dict | None, resume: bool) -> None:
        Trainer(make_model(0), ToyDataset(), _config(max_iters=4), tmp_path, collate,
                run_settings=settings).train(resume=resume)

    train(None, resume=False)
    with pytest.raises(InputError, match=r"last.pt: cannot resume: .*other settings \(\['width'\]\)"):
        train({"width": 8}, resume=True)  # a checkpoint without settings
    train({"width": 8}, resume=False)
    train({"width": 8}, resume=True)  # the same settings resume
    with pytest.raises(InputError, match=r"other settings \(\['width'\]\)"):
        train({"width": 16}, resume=True)


def test_crash_while_checkpointing_keeps_last_good_checkpoint(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    straight = _train(tmp_path / "straight", _config(max_iters=8))
    _train(tmp_path / "run", _config(max_iters=4))
    good = load_checkpoint(tmp_path / "run/checkpoints/last.pt")

    monkeypatch.setattr(checkpoint_module.os, "replace", _crash)  # the temp file is written, then the crash
    with pytest.raises(OSError, match="simulated crash"):
        _train(tmp_path / "run", _config(max_iters=8), resume=True)
    monkeypatch.undo()
    kept = load_checkpoint(tmp_path / "run/checkpoints/last.pt")
    assert kept["iteration"] == 4
    assert all(torch.equal(kept["model"][k], v) for k, v in good["model"].items())
    assert sorted(p.name for p in (tmp_path / "run/checkpoints").iterdir()) == ["last.pt", "model_final.pt"]
    _assert_same_weights(straight, _train(tmp_path / "run", _config(max_iters=8), resume=True))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_loss_stops_before_the_step(tmp_path: Path, value: float) -> None:
    clean = _train(tmp_path / "clean", _config(max_iters=3))
    trainer = _trainer(tmp_path / "bad", _config(checkpoint_every=2), bad_at=(3, value))
    with pytest.raises(NonFiniteLossError) as info:
        trainer.train()
    assert isinstance(info.value, RuntimeError)
    assert f"iteration 3: loss_aux={value}" in str(info.value) and "loss_reg" not in str(info.value)
    assert info.value.iteration == 3 and list(info.value.losses) == ["loss_aux"]
    # The weights are exactly those after iterations 0..2: no step was taken with the bad loss.
    _assert_same_weights(clean, trainer.model)
    assert load_checkpoint(tmp_path / "bad/checkpoints/last.pt")["iteration"] == 2
    assert not (tmp_path / "bad/checkpoints/model_final.pt").exists()
    assert [int(r["iteration"]) for r in _rows(tmp_path / "bad/metrics.csv")] == [0, 1, 2]


def test_amp_flag_is_ignored_on_cpu(tmp_path: Path) -> None:
    _assert_same_weights(_train(tmp_path / "fp32", _config(max_iters=2)),
                         _train(tmp_path / "amp", _config(max_iters=2, amp=True)))
