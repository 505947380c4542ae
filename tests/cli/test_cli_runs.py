"""What train.py and generate.py decide, called in-process: the resume command, ``ckpt_path=last``,
the start time a job counts from, the run summary, the device, and the whole command."""

import json
import os
import shlex
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from helpers import ROOT, compose_task
from hydra.core.override_parser.overrides_parser import OverridesParser

from tinygpt.cli import generate as generate_cli
from tinygpt.cli import paths
from tinygpt.cli import train as train_cli
from tinygpt.errors import ConfigError


def test_the_resume_command_repeats_the_overrides_for_this_run_directory(tmp_path, monkeypatch):
    run_dir = tmp_path / "a=b c"  # Hydra's syntax and a space: both quoted in the command
    compose_task("train", ["model=moe", "trainer.max_steps=7", "ckpt_path=old.ckpt"], run_dir)
    monkeypatch.chdir(ROOT)
    command = train_cli.resume_command(run_dir)
    words = shlex.split(command)
    assert words[:4] == ["python", "train.py", "model=moe", "trainer.max_steps=7"]
    assert words[-1] == "ckpt_path=last" and "ckpt_path=old.ckpt" not in words
    assert OverridesParser.create().parse_override(words[-2]).value() == str(run_dir)
    monkeypatch.chdir(tmp_path)  # elsewhere, the script is named by its whole path
    assert shlex.split(train_cli.resume_command(run_dir))[1] == str(ROOT / "train.py")


def test_the_first_job_counts_from_launch_later_jobs_and_other_processes_from_their_start(
    monkeypatch,
):
    monkeypatch.setattr(train_cli, "_unclaimed_launch", [(os.getpid(), 123.0)])
    assert train_cli.job_start_time() == 123.0
    assert train_cli.job_start_time() == pytest.approx(time.time(), abs=5)
    # A forked worker inherits the list with its parent's pid: it counts from its own start.
    monkeypatch.setattr(train_cli, "_unclaimed_launch", [(os.getpid() + 1, 123.0)])
    assert train_cli.job_start_time() == pytest.approx(time.time(), abs=5)


def test_the_summary_counts_every_rank_and_accumulated_batch(monkeypatch):
    throughput = train_cli.TokenThroughput()
    throughput.tokens, throughput.train_seconds = 4000, 2.0
    trainer = SimpleNamespace(
        checkpoint_callbacks=[  # last.ckpt's (no monitor), then best.ckpt's
            SimpleNamespace(monitor=None, best_model_score=None),
            SimpleNamespace(monitor="val/loss", best_model_score=torch.tensor(1.5)),
        ],
        callbacks=[throughput],
        callback_metrics={
            "val/loss": torch.tensor(1.75),
            "moe/layer0/load/expert0": 0.2,
            "moe/layer0/load/expert1": 0.8,
        },
        global_step=10,
        accumulate_grad_batches=2,
        world_size=3,
    )
    module = SimpleNamespace(model=SimpleNamespace(num_parameters=lambda: 1234))
    datamodule = SimpleNamespace(batch_size=4, block_size=8)
    summary = train_cli.run_summary(trainer, module, datamodule, started=time.time() - 3)
    assert summary == {
        "best_val_loss": 1.5,
        "final_val_loss": 1.75,
        "steps": 10,
        "tokens_seen": 10 * 2 * 3 * 4 * 8,
        "wall_seconds": pytest.approx(3, abs=1),
        "train_tokens_per_second": 2000,
        "parameters": 1234,
        "expert_load_min_over_max": 0.25,
    }
    trainer.checkpoint_callbacks = trainer.checkpoint_callbacks[:1]  # no best: the final val loss
    assert train_cli.run_summary(trainer, module, datamodule, time.time())["best_val_loss"] == 1.75


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("banana", "device 'banana' is not a torch device"),
        ("cuda:0", "device 'cuda:0' requested but CUDA is not available"),
    ],
)
def test_a_device_that_cannot_run_is_refused(name, message, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert generate_cli.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match=message):
        generate_cli.resolve_device(name)


def test_train_main_runs_the_command_in_this_process(tiny_text_file, tmp_path, capsys):
    argv_before = list(sys.argv)
    run_dir = tmp_path / "run"
    train_cli.main(
        [
            "trainer=cpu",
            "trainer.max_steps=4",
            "trainer.val_check_interval=2",
            "model.block_size=16",
            "data.batch_size=8",
            "callbacks.attention_heatmap=null",
            "callbacks.metric_plots=null",
            f"data.path={tiny_text_file}",
            f"hydra.run.dir={run_dir}",
        ],
        launched=time.time() - 100,
    )
    assert sys.argv == argv_before  # restored
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["wall_seconds"] >= 100  # counted from `launched`
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    assert (run_dir / ".hydra" / "overrides.yaml").is_file()
    assert (run_dir / "train.log").is_file()  # the job is named after the command


def test_a_bad_override_in_process_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        generate_cli.main(["no_such_key=1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Could not override 'no_such_key'") and err.count("\n") == 1


def test_without_the_checkouts_configs_the_commands_say_so_in_one_line(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(paths, "CONFIG_DIR", tmp_path / "conf")  # as in a wheel: no conf/
    for main in (train_cli.main, generate_cli.main):
        with pytest.raises(SystemExit) as exit_info:
            main(["seed=1"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: no training configs at {tmp_path / 'conf'}: train.py")
        assert err.count("\n") == 1
