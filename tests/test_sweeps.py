"""Sweeps through Hydra's plugins: parallel local jobs, SLURM job arrays, Optuna searches."""

import os
import sys

import cloudpickle
from hydra.core.singleton import Singleton
from lightning.pytorch.strategies.launchers import subprocess_script
from omegaconf import OmegaConf
from omegaconf.basecontainer import BaseContainer
from test_configs import compose_train
from test_train import ROOT

from tinygpt import hydra_ddp
from tinygpt.config import register_resolvers


def test_job_names_come_from_the_launching_command_line(monkeypatch):
    # The launching process registers the resolvers; a launcher's worker gets them pickled with
    # Hydra's singleton state and resolves the job directory under a sys.argv of its own.
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "seed=1,2", "trainer.max_steps=5"])
    register_resolvers()
    shipped = cloudpickle.loads(cloudpickle.dumps(Singleton.get_state()["omegaconf_resolvers"]))
    monkeypatch.setattr(sys, "argv", ["/x/submitit/core/_submit.py", "/sweep/.submitit/42"])
    monkeypatch.setattr(BaseContainer, "_resolvers", shipped)
    job = OmegaConf.create(
        {
            "overrides": ["seed=2", "trainer.max_steps=5", "hparams_search=optuna"],
            "name": "${sweep_job_name:${overrides}}",
        }
    )
    assert job.name == "seed=2"

    # An Optuna search sweeps the keys of its search space, not the command line's.
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "hparams_search=optuna", "seed=3"])
    register_resolvers()
    trial = OmegaConf.create(
        {
            "params": {
                "optim.lr": "tag(log, interval(3e-4, 1e-2))",
                "model.n_embd": "choice(32, 64)",
                "trainer.max_steps": "5",  # a fixed value, not a search dimension
            },
            "overrides": [
                "optim.lr=0.001",
                "model.n_embd=64",
                "trainer.max_steps=5",
                "hparams_search=optuna",
                "seed=3",
            ],
            "name": "${sweep_job_name:${overrides},${params}}",
        }
    )
    assert trial.name == "optim.lr=0.001,model.n_embd=64"


def test_ddp_ranks_rerun_the_entry_script_from_a_worker_process(monkeypatch, tmp_path):
    # In a joblib or submitit worker, sys.argv[0] and __main__ are the worker's own program.
    monkeypatch.setattr(subprocess_script, "_hydra_subprocess_cmd", None)  # restored afterwards
    monkeypatch.setattr(sys, "argv", ["/x/loky/backend/popen_loky_posix.py", "--pipe", "7"])
    compose_train(["trainer=ddp", "seed=5"], tmp_path)
    hydra_ddp.install(str(ROOT / "train.py"))
    command, cwd = subprocess_script._hydra_subprocess_cmd(1)
    assert command[:4] == [sys.executable, str(ROOT / "train.py"), "trainer=ddp", "seed=5"]
    assert f"hydra.run.dir='{tmp_path}'" in command
    assert cwd == os.getcwd()
