"""A run directory: a new one claimed for each run, who else is writing into it (a lock),
whether its job already finished, and which of its checkpoints a resume starts from.

The same rules make an interrupted sweep resumable: rerun the same ``train.py -m`` command with
the same ``hydra.sweep.dir`` plus ``ckpt_path=last``, and each job directory decides for itself
(finished: left alone; interrupted: resumed from its last.ckpt; never started: from scratch).
"""

import fcntl
import itertools
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf.errors import OmegaConfBaseException

from tinygpt.errors import CheckpointError, RunDirInUseError
from tinygpt.files import write_error

LOCK_FILE = ".run.lock"
SUMMARY_FILE = "summary.json"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
HPC_CHECKPOINTS = "hpc_ckpt_*.ckpt"  # Lightning's, saved on SLURM's requeue signal


def new_run_dir(parent: str) -> str:
    """``${new_run_dir:PARENT}``: a directory of this run's own under ``PARENT``, named by the
    time it starts (``2026-12-07_14-03-22``), ``_2``, ``_3``... added when runs start in the
    same second. ``os.mkdir`` claims the name atomically, also between machines sharing the file
    system. Registered with OmegaConf's cache, so a config (and a sweep's jobs) claims it once.
    """
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    try:
        Path(parent).mkdir(parents=True, exist_ok=True)
        for n in itertools.count(1):
            path = Path(parent) / (stamp if n == 1 else f"{stamp}_{n}")
            try:
                path.mkdir()
                return str(path)
            except FileExistsError:
                continue
    except OSError as exc:
        raise write_error(exc.filename or parent, exc) from None


@contextmanager
def run_dir_lock(run_dir: str | Path) -> Iterator[None]:
    """An exclusive lock on a run directory for as long as one process (train.py, generate.py,
    eval.py) writes into it, or :class:`RunDirInUseError` naming the process that holds it.

    It is an ``flock`` on ``<run>/.run.lock``, which the kernel drops when the process ends,
    however it ends: a lock left by a killed run never blocks. The file names its holder (pid
    and command line) for the message a second process is refused with; it stays when the lock
    is dropped, naming its last holder.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "a process that has not written its pid yet"
            raise RunDirInUseError(
                f"{run_dir} is in use by another process ({holder}); wait for it to end, "
                "or give this run another directory"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}: {' '.join(sys.argv)}\n")
        f.flush()
        yield


def lock_held_elsewhere(run_dir: str | Path) -> bool:
    """Whether another open of the run directory's lock file holds it now (a live process)."""
    path = Path(run_dir) / LOCK_FILE
    if not path.exists():
        return False
    with open(path, encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """The run's summary.json, or an empty dict where there is none to read."""
    try:
        summary = json.loads((Path(run_dir) / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def finished_summary(run_dir: str | Path, max_steps: int) -> dict[str, Any] | None:
    """The run's summary.json if it finished training for ``max_steps`` steps, else None."""
    summary = read_summary(run_dir)
    return summary if summary.get("steps") == max_steps else None


def job_config_subdir(
    subdir: str, run_dir: str | None, ckpt_path: str | None, *, _root_
) -> str | None:
    """Where Hydra saves a job's composed config (``hydra.output_subdir``): ``subdir``, or None
    (nothing saved) for a directory that must stay as it is: a finished job that a resumed
    sweep skips, or a directory another live process writes into (the job then refuses).

    Hydra saves the config before the job starts; this resolver is the hook that runs first.
    ``trainer.max_steps`` is read only for ``ckpt_path=last`` and from the root (OmegaConf's
    ``_root_``), so a config whose max_steps cannot resolve (e.g. a bad epoch setting) still
    reaches train(), which reports it in one line.
    """
    if run_dir is None:  # composing without a job (--cfg): nothing to protect
        return subdir
    if ckpt_path == "last":
        try:
            max_steps = _root_.trainer.max_steps
        except OmegaConfBaseException:
            return subdir
        if finished_summary(run_dir, max_steps) is not None:
            return None
    if lock_held_elsewhere(run_dir):
        return None
    return subdir


def resolve_ckpt_path(
    ckpt_path: str | None, run_dir: Path, in_sweep: bool = False, requeued: bool = False
) -> str | None:
    """The checkpoint a run starts from: ``last`` means this run directory's last.ckpt (in a
    sweep, a job without one starts from scratch); a requeued SLURM job with none given takes
    the newest of its last.ckpt and Lightning's hpc checkpoints; anything else is a path."""
    last = run_dir / LAST_CHECKPOINT
    if ckpt_path == "last":
        if last.exists():
            return str(last)
        if in_sweep:
            return None  # this job never saved a checkpoint: it runs from the start
        raise CheckpointError(
            f"ckpt_path=last: no checkpoint at {last}; add hydra.run.dir=<the run's directory>"
        )
    if ckpt_path is None and requeued:
        saved = [p for p in [last, *run_dir.glob(HPC_CHECKPOINTS)] if p.is_file()]
        if saved:
            return str(max(saved, key=lambda p: p.stat().st_mtime))
    return ckpt_path
