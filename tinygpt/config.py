"""OmegaConf resolvers used by the YAML files in conf/; entry points register them first."""

from __future__ import annotations

import re
import sys

import torch
from omegaconf import OmegaConf


def auto_precision() -> str:
    """bf16-mixed on a GPU that supports it, full float32 elsewhere."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def safe_name(text: str) -> str:
    """A directory name from Hydra's override string: no path separators or odd characters."""
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", text)[:120] or "default"


SWEEP_FUNCTIONS = ("range(", "choice(", "interval(", "glob(", "tag(")


def swept_keys(argv: list[str]) -> set[str]:
    """Keys that a multirun command line sweeps over (``key=a,b`` or ``key=range(...)``)."""
    keys = set()
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or arg.startswith("-"):
            continue
        depth = 0
        for char in value:
            depth += char in "[{(" and 1 or 0
            depth -= char in "]})" and 1 or 0
            if char == "," and depth == 0:
                keys.add(key.lstrip("+~"))
                break
        if value.startswith(SWEEP_FUNCTIONS):
            keys.add(key.lstrip("+~"))
    return keys


def sweep_job_name(task_overrides: list[str]) -> str:
    """A job directory name from the values this job takes for the swept keys.

    ``python train.py -m model=dense,moe seed=1,2 trainer.max_steps=500`` names its jobs
    ``model=dense,seed=1`` and so on, leaving out what all jobs share. When the sweep is not on
    the command line (a sweeper plugin's search space), all of the job's overrides are used.
    """
    swept = swept_keys(sys.argv[1:])
    chosen = [o for o in task_overrides if o.partition("=")[0].lstrip("+~") in swept]
    return safe_name(",".join(chosen or task_overrides))


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("auto_precision", auto_precision, replace=True)
    OmegaConf.register_new_resolver("safe_name", safe_name, replace=True)
    OmegaConf.register_new_resolver("sweep_job_name", sweep_job_name, replace=True)
