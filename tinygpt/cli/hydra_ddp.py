"""DDP under Hydra without duplicate run directories, sweeps or logs.

Lightning starts DDP ranks 1..N-1 by re-running the script with the original command line plus
``hydra.run.dir=<the run.dir pattern>``. Inside a multirun job that re-runs the whole sweep (the
command still holds ``-m`` and every swept value) into the wrong directory, and each rank writes
its own log file. The command built here re-runs only this job: its own overrides, its own output
directory, and no Hydra output or logging of its own, so only rank 0 writes anything.
"""

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_original_cwd

from tinygpt.cli.quoting import hydra_quoted

# Lightning's launcher sets these in the launching process for its children; while LOCAL_RANK
# is set, Lightning believes someone else starts the ranks and would wait for ranks that never come.
LAUNCHER_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def rank_command(local_rank: int, script: str) -> tuple[Sequence[str], str]:
    """The command and working directory that start DDP rank ``local_rank`` of this job."""
    hydra_config = HydraConfig.get()
    command = [sys.executable, script, *hydra_config.overrides.task]
    # Quoted: a directory given with hydra.run.dir may hold anything, `=` and `,` included.
    command += [
        f"hydra.run.dir={hydra_quoted(hydra_config.runtime.output_dir)}",
        "hydra.output_subdir=null",
        "hydra/job_logging=disabled",
        "hydra/hydra_logging=disabled",
    ]
    return command, get_original_cwd()


def install(script: str) -> None:
    """Make Lightning's DDP launcher start this job's ranks by re-running ``script``.

    Each job calls this, in the process that runs it: a launcher plugin's worker (joblib,
    submitit) runs jobs without importing the entry script, and its sys.argv[0] and __main__ are
    the worker's own program, which Lightning would otherwise re-run.
    """
    from lightning.pytorch.strategies.launchers import subprocess_script

    subprocess_script._hydra_subprocess_cmd = partial(rank_command, script=os.path.abspath(script))


@contextmanager
def job_scope() -> Iterator[None]:
    """Let the next job of a multirun, in this same process, start a DDP group of its own."""
    saved = {name: os.environ.get(name) for name in LAUNCHER_ENV}
    try:
        yield
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
