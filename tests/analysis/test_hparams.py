"""HParams sessions in-process: configs flattened into hyperparameters, sessions written and read
back with TensorBoard's own reader and the hparams plugin's parser."""

import math

import pytest
from helpers import compose_task, read_session
from omegaconf import OmegaConf
from tensorboard.plugins.hparams import metadata
from torch.utils.tensorboard import SummaryWriter

from tinygpt.analysis.hparams import (
    NOT_SHAPING,
    expert_load_balance,
    flatten,
    log_session,
    log_training_session,
    override_hparams,
    training_hparams,
    training_metrics,
)
from tinygpt.analysis.plots import read_scalars


def test_flatten_keeps_typed_values_dots_keys_and_drops_targets_and_unset():
    config = {
        "_target_": "x.Y",
        "model": {"_target_": "m.C", "n_layer": 2, "bias": True, "dropout": 0.1, "moe": None},
        "optim": {"betas": [0.9, 0.99]},
        "name": "run",
    }
    assert flatten(config) == {
        "model.n_layer": 2,
        "model.bias": True,
        "model.dropout": 0.1,
        "optim.betas": "[0.9, 0.99]",
        "name": "run",
    }


def test_overrides_give_resolved_values_group_choices_as_text_and_skip_deletions():
    config = {
        "model": {"num_experts": 8, "ffn": "moe", "moe_layers": [0, 1], "capacity_factor": None},
        "seed": 2,
    }
    overrides = [
        "model=moe",  # a config group: its choice
        "model.num_experts=8",
        "model.moe_layers=[0,1]",  # a list: its JSON text
        "model.capacity_factor=null",  # unset: nothing
        "seed=2",
        "+experiment=cpu_fast",  # nothing in the config by that name: the text
        "~callbacks.sample_text",
    ]
    assert override_hparams(config, overrides) == {
        "model": "moe",
        "model.num_experts": 8,
        "model.moe_layers": "[0, 1]",
        "seed": 2,
        "experiment": "cpu_fast",
    }


def test_training_hparams_of_a_composed_sweep_job(tmp_path):
    overrides = ["model=moe", "model.num_experts=8", "seed=2", "trainer=cpu"]
    config = OmegaConf.to_container(compose_task("train", overrides, tmp_path), resolve=True)
    hparams = training_hparams(config, overrides)
    # The swept values, as columns of their own type.
    assert hparams["model.num_experts"] == 8 and hparams["seed"] == 2
    assert hparams["model"] == "moe" and hparams["trainer"] == "cpu"
    # The values that shape the run, resolved as the run saw them.
    assert hparams["kind"] == "train"
    assert hparams["model.n_layer"] == 2 and hparams["model.ffn"] == "moe"
    assert hparams["optim.lr"] == 1e-3 and hparams["optim.betas"] == "[0.9, 0.99]"
    assert hparams["data.batch_size"] == 64 and hparams["trainer.max_steps"] == 2000
    assert hparams["trainer.precision"] == "32-true"
    assert hparams["model.compile"] is False
    # Neither plumbing nor interpolated copies nor callbacks.
    assert not NOT_SHAPING & set(hparams)
    assert not any(k.startswith(("callbacks", "logger", "ckpt_path")) for k in hparams)
    assert not any("_target_" in k for k in hparams)
    assert all(type(v) in (bool, int, float, str) for v in hparams.values())


def test_expert_load_balance_is_the_most_uneven_layers_min_over_max():
    loads = {
        "moe/layer0/load/expert0": 0.5,
        "moe/layer0/load/expert1": 0.5,
        "moe/layer1/load/expert0": 0.2,
        "moe/layer1/load/expert1": 0.8,
        "moe/layer1/router_entropy": 0.1,
        "val/loss": 2.0,
    }
    assert expert_load_balance(loads) == {"expert_load_min_over_max": 0.25}
    starved = {**loads, "moe/layer0/load/expert1": 0.0, "moe/layer0/load/expert0": 1.0}
    assert expert_load_balance(starved) == {"expert_load_min_over_max": 0.0}
    assert expert_load_balance({"val/loss": 2.0}) == {}  # a dense model


def test_a_session_holds_typed_hparams_and_metrics_but_no_experiment(tmp_path):
    log_dir = tmp_path / "multirun" / "2024-01-01_00-00-00" / "3_seed=2" / "tb"
    hparams = {"seed": 2, "model.bias": True, "optim.lr": 0.001, "model": "moe"}
    metrics = {"summary/best_val_loss": 1.5, "summary/none": None, "summary/nan": math.nan}
    with SummaryWriter(str(log_dir)) as writer:
        writer.add_scalar("val/loss", 2.5, 19)  # the run's own scalars, in the same directory
        log_session(writer, hparams, metrics, step=20, start=1000.0)

    start, tags = read_session(log_dir)
    assert start.hparams["seed"].number_value == 2
    assert start.hparams["model.bias"].bool_value is True  # not the number 1
    assert start.hparams["optim.lr"].number_value == 0.001
    assert start.hparams["model"].string_value == "moe"
    assert start.group_name == "multirun/2024-01-01_00-00-00/3_seed=2"  # one row per run
    assert start.start_time_secs == 1000.0
    # No experiment summary: it would fix the dashboard's columns to this run's.
    assert metadata.EXPERIMENT_TAG not in tags["tensors"]
    assert read_scalars(log_dir) == {"val/loss": [(19, 2.5)], "summary/best_val_loss": [(20, 1.5)]}
    assert [p.parent for p in tmp_path.rglob("events.out.tfevents.*")] == [log_dir]  # one run


def test_a_training_session_shows_the_summarys_metrics(tmp_path):
    summary = {
        "best_val_loss": 1.9,
        "final_val_loss": 1.95,
        "steps": 200,
        "tokens_seen": 409600,
        "wall_seconds": 12.5,
        "train_tokens_per_second": 100000,
        "parameters": 106304,
        "expert_load_min_over_max": 0.8,
    }
    assert training_metrics(summary) == {
        "summary/best_val_loss": 1.9,
        "summary/final_val_loss": 1.95,
        "summary/train_tokens_per_second": 100000,
        "summary/wall_seconds": 12.5,
        "summary/expert_load_min_over_max": 0.8,
    }
    config = {"model": {"n_layer": 2}, "seed": 1, "callbacks": {"x": 1}}
    log_training_session(tmp_path / "run" / "tb", config, ["seed=1"], summary)
    scalars = read_scalars(tmp_path / "run")
    assert set(scalars) == set(training_metrics(summary))
    for tag, value in training_metrics(summary).items():
        [(step, logged)] = scalars[tag]
        assert step == 200 and logged == pytest.approx(value, rel=1e-6)  # stored as float32
    start, _ = read_session(tmp_path / "run" / "tb")
    assert set(start.hparams) == {"kind", "model.n_layer", "seed"}
