"""Where runs live: the project root (``$TINYGPT_ROOT`` moves it); a run directory of its own
claimed for each run, who else writes into it (a lock), whether its job already finished, which
checkpoint a resume starts from; and which checkpoint generate.py and eval.py use when given none.

An interrupted sweep resumes by these rules: rerun the same ``train.py -m`` command with the same
``hydra.sweep.dir`` plus ``ckpt_path=last``, and each job directory decides for itself (finished:
left alone; interrupted: resumed from its last.ckpt; never started: from scratch).

A run's ``checkpoints/`` holds ``best.ckpt`` (lowest val loss) or ``last.ckpt`` (the latest
step); the newest run is the one whose checkpoint was written last. Picking the newest ``*.ckpt``
file instead would take a short sweep's ``last.ckpt`` over a finished run's ``best.ckpt`` just
because it was touched later.
"""

import fcntl
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf.errors import OmegaConfBaseException

from tinygpt.errors import CheckpointError, ConfigError, RunDirInUseError
from tinygpt.files import write_error

# A checkout of the repository holds this package, conf/, train.py and generate.py side by side;
# outputs/ and data/ live in it by default, whatever the working directory.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"
ROOT_ENV = "TINYGPT_ROOT"
LOCK_FILE = ".run.lock"
SUMMARY_FILE = "summary.json"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
HPC_CHECKPOINTS = "hpc_ckpt_*.ckpt"  # Lightning's, saved on SLURM's requeue signal


def config_dir() -> Path:
    """conf/ of the checkout that holds this package: where train.py and generate.py compose
    their configs. A package installed on its own (``pip install .``) has none: training and
    generate.py run from a checkout, and this error says so."""
    if not (CONFIG_DIR / "train.yaml").is_file():
        raise ConfigError(
            f"no training configs at {CONFIG_DIR}: train.py, generate.py and report --run need "
            "a checkout of the TinyGPT repository (git clone, then pip install -e . in it); "
            "this tinygpt is installed without one (reports over finished runs and "
            "checkpoints work anywhere)"
        )
    return CONFIG_DIR


def root_dir() -> str:
    """``$TINYGPT_ROOT`` (made absolute) if set and not empty, else the project root."""
    override = os.environ.get(ROOT_ENV)
    return str(Path(override).expanduser().absolute()) if override else str(PROJECT_ROOT)


PREFERRED = ("best.ckpt", "last.ckpt")


def checkpoint_to_use(ckpt_path: str | None, root: str | Path) -> Path:
    """``ckpt_path``, or where it is None the newest run's under ``root``, named on stderr."""
    if ckpt_path is not None:
        return Path(str(ckpt_path))
    path = newest_run_checkpoint(root)
    print(describe_choice(path), file=sys.stderr, flush=True)
    return path


def newest_run_checkpoint(root: str | Path) -> Path:
    """The best.ckpt (else last.ckpt) of the run under ``root`` that wrote a checkpoint last."""
    root = Path(root)
    runs: dict[Path, list[Path]] = {}
    for name in PREFERRED:
        for path in sorted(root.glob(f"**/checkpoints/{name}")):
            if path.is_file():
                runs.setdefault(path.parent.parent, []).append(path)
    if not runs:
        raise CheckpointError(
            f"no ckpt_path given and no run under {root}/ has checkpoints/best.ckpt or "
            "last.ckpt; give one with ckpt_path=PATH"
        )
    newest = max(runs.values(), key=lambda paths: max(p.stat().st_mtime for p in paths))
    return newest[0]  # best.ckpt where there is one: PREFERRED's order


def describe_choice(path: Path) -> str:
    """One line for stderr: which checkpoint of the newest run, its step and val loss."""
    step, val_loss = recorded_progress(path)
    step_text = "step unknown" if step is None else f"step {step}"
    loss = "no val loss recorded" if val_loss is None else f"val loss {val_loss:.4f}"
    why = "" if path.name == PREFERRED[0] else f"no {PREFERRED[0]}; "
    return f"using the newest run's {path.name} ({why}{step_text}, {loss}): {path}"


def recorded_progress(path: Path) -> tuple[int | None, float | None]:
    """The step and val loss that Lightning stored in the checkpoint, else the run's summary.

    Only for the message: a checkpoint that cannot be read here gives ``None`` and is reported
    properly by the loader that follows.
    """
    best = path.name == PREFERRED[0]
    try:  # weights-only (runs no code); mmap reads the small entries without the weights
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # any unreadable file: the loader that follows names the problem
        checkpoint = {}
    checkpoint = checkpoint if isinstance(checkpoint, dict) else {}
    val_loss = None
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if str(key).startswith("ModelCheckpoint") and state.get("monitor") == "val/loss":
            val_loss = _finite(state.get("best_model_score" if best else "current_score"))
    if val_loss is None:
        summary = read_summary(path.parent.parent)
        val_loss = _finite(summary.get("best_val_loss" if best else "final_val_loss"))
    step = checkpoint.get("global_step")
    return (step if isinstance(step, int) else None), val_loss


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return number if math.isfinite(number) else None


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
