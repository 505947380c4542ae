"""Sweeps through Hydra's plugins: parallel local jobs, SLURM job arrays, Optuna searches.

The parallel sweep runs as a user starts it (a train.py process and its joblib workers); the
others run train.py's command in this process (tinygpt.cli.train.main)."""

import json
import os
import re
import shlex
import stat
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import (
    ROOT,
    TINY_RUN,
    compose_task,
    job_name,
    needs_sweeps,
    one_error_line,
    run_train,
)
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from lightning.pytorch.strategies.launchers import subprocess_script

from tinygpt.cli import hydra_ddp
from tinygpt.cli import train as train_cli
from tinygpt.cli.resolvers import parallel_jobs, register_resolvers, register_schemas

# Ten steps, one evaluation, no pictures: these tests are about the jobs, not the training.
TINY_SWEEP = [
    "-m",
    *TINY_RUN,
    "trainer.max_steps=10",
    "callbacks.metric_plots=null",
]


def summaries(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))}


@pytest.mark.parametrize(
    ("config", "overrides", "name"),
    [
        ("train", ["seed=1", "model=dense"], "model-dense+seed-1"),  # sorted
        (
            "train",
            ["model=moe", "model.num_experts=2", "ckpt_path=last"],
            "model.num_experts-2+model-moe",
        ),
        (
            "train",
            ["optim.lr=0.0012345678901234", "model.dropout=-0.5"],  # as Optuna samples it
            "model.dropout--0.5+optim.lr-0.001235",
        ),
        (
            "train",
            ["model=moe", "model.moe_layers=[0,1]", "data.path=/a/b c.txt"],
            "model.moe_layers-_0_1_+model-moe",
        ),
        ("train", ["+extra='x=y'", "hparams_search=optuna"], "+extra-_x-y_"),
        ("train", ["+x=${seed}"], "+x-1337"),  # resolved
        ("generate", ["prompt='a b, c'", "prompt_file=/a/b.txt"], "prompt-_a_b__c_"),
        ("generate", ["decoder.stop=['$', '*']"], "decoder.stop-" + "_" * 10),
    ],
)
def test_job_directories_are_readable_and_paste_back_unquoted(config, overrides, name):
    # Readable as TensorBoard run names (paths and how a run starts left out: a rerun with
    # ckpt_path=last finds the same directories), and a checkpoint path inside one pastes back
    # after ckpt_path= as it is: one shell word, one plain string to Hydra (no sweep, no syntax).
    assert job_name(config, overrides) == name
    path = f"/outputs/multirun/2026-01-01_10-00-00/0_{name}/checkpoints/last.ckpt"
    assert shlex.split(path) == [path]
    override = OverridesParser.create().parse_override(f"ckpt_path={path}")
    assert override.value() == path and not override.is_sweep_override()


def test_ddp_ranks_rerun_the_entry_script_from_a_worker_process(monkeypatch, tmp_path):
    # In a joblib or submitit worker, sys.argv[0] and __main__ are the worker's own program.
    monkeypatch.setattr(subprocess_script, "_hydra_subprocess_cmd", None)  # restored afterwards
    monkeypatch.setattr(sys, "argv", ["/x/loky/backend/popen_loky_posix.py", "--pipe", "7"])
    compose_task("train", ["trainer=ddp", "seed=5"], tmp_path)
    hydra_ddp.install(str(ROOT / "train.py"))
    command, cwd = subprocess_script._hydra_subprocess_cmd(1)
    assert command[:4] == [sys.executable, str(ROOT / "train.py"), "trainer=ddp", "seed=5"]
    assert f"hydra.run.dir='{tmp_path}'" in command
    assert cwd == os.getcwd()


@needs_sweeps
@pytest.mark.slow
def test_parallel_launcher_runs_jobs_in_worker_processes(tiny_text_file, tmp_path):
    sweep = tmp_path / "sweep"
    launched = time.time()
    result = run_train(
        *TINY_SWEEP,
        "hydra/launcher=parallel",  # joblib, two jobs at once
        "seed=1,2",
        f"data.path={tiny_text_file}",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = summaries(sweep)
    # Named after their overrides, in the workers too.
    assert [name.split("_")[0] for name in jobs] == ["0", "1"]
    assert "+seed-1+" in list(jobs)[0] and "+seed-2+" in list(jobs)[1]
    for name, summary in jobs.items():
        assert summary["steps"] == 10
        checkpoints = sorted(p.name for p in (sweep / name / "checkpoints").iterdir())
        assert checkpoints == ["best.ckpt", "last.ckpt"]
        # A worker's job counts from its own start, not from the launching process's start.
        finished = (sweep / name / "summary.json").stat().st_mtime
        assert summary["wall_seconds"] < finished - launched - 1.0
    assert len({job["best_val_loss"] for job in jobs.values()}) == 2
    # Event files are named ...tfevents.<time>.<host>.<pid>.<n>: two worker processes.
    pids = {
        next((sweep / name / "tb").glob("events.out.tfevents.*")).name.split(".")[-2]
        for name in jobs
    }
    assert len(pids) == 2 and str(os.getpid()) not in pids


@needs_sweeps
def test_optuna_search_minimises_the_best_val_loss(tiny_text_file, tmp_path, capfd):
    sweep = tmp_path / "sweep"
    train_cli.main(
        [
            *TINY_SWEEP,
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=2",
            f"data.path={tiny_text_file}",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert "setup plugin" not in capfd.readouterr().out  # alembic's start-up chatter is silenced
    jobs = summaries(sweep)
    assert len(jobs) == 2
    trials = {}
    for name in jobs:
        # Named after the trial's values (floats to 4 digits), not hparams_search or data.path.
        lr = float(re.search(r"\+optim\.lr-([\d.e-]+)\+", name)[1])
        assert lr == float(f"{lr:.4g}"), name
        assert "hparams_search" not in name and "data.path" not in name
        config = yaml.safe_load((sweep / name / ".hydra" / "config.yaml").read_text())
        params = {
            "optim.lr": config["optim"]["lr"],
            "model.n_embd": config["model"]["n_embd"],
            "model.dropout": config["model"]["dropout"],
        }
        assert 3e-4 <= params["optim.lr"] <= 1e-2
        assert params["model.n_embd"] in (32, 64, 128)
        assert 0.0 <= params["model.dropout"] <= 0.2
        assert config["trainer"]["max_steps"] == 10  # the command line's fixed values hold
        trials[name] = params
    assert len({json.dumps(p, sort_keys=True) for p in trials.values()}) == 2  # two trials

    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best = min(jobs, key=lambda name: jobs[name]["best_val_loss"])
    assert results["best_value"] == jobs[best]["best_val_loss"]
    assert results["best_params"] == trials[best]


@needs_sweeps
@pytest.mark.parametrize(
    ("launcher", "trials_at_once"), [("basic", 1), ("parallel", 2), ("joblib", os.cpu_count())]
)
def test_optuna_asks_for_as_many_trials_as_the_launcher_runs(launcher, trials_at_once, tmp_path):
    # joblib's own default, n_jobs=-1 (every core), made the Optuna sweeper divide by zero.
    register_resolvers()
    register_schemas()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        overrides = ["hparams_search=optuna", f"hydra/launcher={launcher}"]
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    assert cfg.hydra.sweeper.n_jobs == trials_at_once


def test_parallel_jobs_reads_n_jobs_as_joblib_does():
    cores = os.cpu_count()
    assert [parallel_jobs(n) for n in (None, 1, 3, -1)] == [1, 1, 3, cores]
    assert parallel_jobs(-2) == max(1, cores - 1)
    assert parallel_jobs(-cores - 5) == 1


@pytest.fixture
def fake_slurm(tmp_path: Path) -> Path:
    """``srun`` and an ``sbatch`` that keeps the script it is given and refuses it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "srun": "#!/bin/sh\nexit 1\n",
        "sbatch": f'#!/bin/sh\ncp "$1" "{tmp_path}/sbatch.sh"\necho no cluster here >&2\nexit 1\n',
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    return bin_dir


@needs_sweeps
def test_slurm_launcher_submits_one_task_and_gpu_per_ddp_rank(
    fake_slurm, tiny_text_file, tmp_path, monkeypatch
):
    monkeypatch.setenv("PATH", f"{fake_slurm}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(Exception, match="no cluster here"):  # noqa: B017 - submitit's own error
        train_cli.main(
            [
                "-m",
                "hydra/launcher=slurm",
                "hydra.launcher.partition=gpu",
                "trainer=ddp",
                "trainer.devices=4",
                "seed=range(20)",  # 20 jobs: more than array_parallelism runs at once
                f"data.path={tiny_text_file}",
                f"hydra.sweep.dir={tmp_path / 'sweep'}",
            ]
        )
    directives = [
        line.removeprefix("#SBATCH ")
        for line in (tmp_path / "sbatch.sh").read_text().splitlines()
        if line.startswith("#SBATCH ")
    ]
    assert {
        "--partition=gpu",
        "--time=240",
        "--nodes=1",
        "--ntasks-per-node=4",
        "--gpus-per-node=4",
        "--cpus-per-task=8",
        "--mem=32GB",
        "--array=0-19%16",
        "--job-name=train",
    } <= set(directives), directives
    assert not any(d.startswith("--account") for d in directives)  # null: left to the cluster


def test_unknown_search_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(["-m", "hparams_search=grid", f"hydra.sweep.dir={tmp_path / 's'}"])
    assert exit_info.value.code == 2
    assert one_error_line(capsys.readouterr().err).endswith(
        "Could not find 'hparams_search/grid' Available options in 'hparams_search': optuna"
    )
    assert not (tmp_path / "s").exists()


@needs_sweeps
def test_zero_parallel_jobs_is_one_line_before_any_job(tiny_text_file, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(
            [
                *TINY_SWEEP,
                "hydra/launcher=parallel",
                "hydra.launcher.n_jobs=0",
                "seed=1,2",
                f"data.path={tiny_text_file}",
                f"hydra.sweep.dir={sweep}",
            ]
        )
    assert exit_info.value.code == 2
    assert [one_error_line(capsys.readouterr().err)] == [
        "error: hydra.launcher.n_jobs must be the number of jobs at once (>= 1) or -1 for every "
        "core (-2 all but one, ...), got 0"
    ]
    assert not list(sweep.glob("*/summary.json"))  # no job ran


@pytest.mark.parametrize(
    ("choice", "plugin"),
    [
        ("hydra/launcher=parallel", "hydra-joblib-launcher"),
        ("hydra/launcher=slurm", "hydra-submitit-launcher"),
        ("hparams_search=optuna", "hydra-optuna-sweeper"),
    ],
)
def test_a_sweep_plugin_not_installed_is_one_line_naming_the_extra(
    choice, plugin, tmp_path, capsys, monkeypatch
):
    # Without the plugin, Hydra has no config of the plugin's name: take them out of its store.
    Plugins.instance()  # the plugins that are installed have registered their configs by now
    repo = ConfigStore.instance().repo["hydra"]
    for group, name in (
        ("launcher", "joblib"),
        ("launcher", "submitit_slurm"),
        ("sweeper", "optuna"),
    ):
        monkeypatch.delitem(repo[group], f"{name}.yaml", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(["-m", choice, "seed=1,2", f"hydra.sweep.dir={tmp_path / 's'}"])
    assert exit_info.value.code == 2
    error = one_error_line(capsys.readouterr().err)
    assert error.startswith(f"error: Hydra's sweep plugin {plugin} is not installed (no hydra/")
    assert error.endswith('install the sweeps extra, pip install -e ".[sweeps]"')
    assert not (tmp_path / "s").exists()
