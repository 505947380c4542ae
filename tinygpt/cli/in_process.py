"""``tinygpt.train(overrides)``: what ``python train.py OVERRIDES`` does, in this process.

Hydra's compose API builds the config from conf/train.yaml (no ``sys.argv``, from any working
directory) and Hydra's own ``run_job`` runs it, so the run directory, ``.hydra/`` files,
checkpoints, events and summary are train.py's. Made for notebooks: it can run many times in
one process, errors are exceptions (never ``SystemExit``), and an interrupted kernel stops the
run at a safe point with ``last.ckpt`` saved, then raises ``KeyboardInterrupt``.
"""

import signal
import threading
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.callbacks import Callbacks  # what hydra.main hands run_job
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import JobStatus, run_job
from hydra.types import HydraContext, RunMode
from omegaconf import open_dict

from tinygpt.analysis.runs import Run, load_run
from tinygpt.cli import train as train_command
from tinygpt.cli.errors import hydra_scope, user_error
from tinygpt.cli.paths import config_dir
from tinygpt.cli.quoting import resume_overrides
from tinygpt.cli.resolvers import register_resolvers, register_schemas
from tinygpt.errors import ConfigError
from tinygpt.training.checkpointing import STOP_SIGNALS

INTERRUPTED = 128 + 2  # LastCheckpoint's exit status on SIGINT (the kernel's interrupt)


def train(overrides: Sequence[str] = ()) -> Run:
    """Train as ``python train.py OVERRIDES`` does and return the finished run (its ``dir``,
    ``summary``, ``scalars()`` and ``load_model()``). A bad override raises a
    :class:`~tinygpt.errors.TinyGPTError` with train.py's one-line message."""
    if isinstance(overrides, str):
        raise ConfigError(f"overrides must be a list of strings, got the string {overrides!r}")
    overrides = [str(o) for o in overrides]
    register_resolvers()
    register_schemas()
    GlobalHydra.instance().clear()
    # Lightning's teardown puts back the signal handlers it found, LastCheckpoint's among them:
    # the kernel's own come back here.
    on_main_thread = threading.current_thread() is threading.main_thread()
    handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} if on_main_thread else {}
    try:
        with hydra_scope(), initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
            with open_dict(cfg):
                cfg.hydra.mode = RunMode.RUN
                cfg.hydra.job.name = "train"
            context = HydraContext(GlobalHydra.instance().config_loader(), Callbacks(cfg))
            job = run_job(
                hydra_context=context,
                task_function=train_command.train,
                config=cfg,
                job_dir_key="hydra.run.dir",
                job_subdir_key=None,
            )
            if job.status == JobStatus.FAILED:
                raise job._return_value  # what the job raised (return_value logs it first)
    except SystemExit as stop:
        if stop.code == INTERRUPTED:
            # run_job sets the run directory in place
            resume = resume_overrides(overrides, cfg.hydra.runtime.output_dir)
            raise KeyboardInterrupt(
                f"last.ckpt saved; resume with tinygpt.train({resume!r})"
            ) from None
        raise ConfigError(f"training stopped with exit status {stop.code}") from None
    except Exception as exc:
        cause = user_error(exc)
        if cause is None:
            raise
        raise cause from None
    finally:
        GlobalHydra.instance().clear()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return load_run(Path(cfg.hydra.runtime.output_dir))
