"""OmegaConf resolvers used by the YAML files in conf/ (entry points register them first), and
the Hydra callbacks that act before a sweep's first job: a check of its launcher settings, and
what a sweep rerun with ``ckpt_path=last`` will do."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path

import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from tinygpt.cli.errors import exit_with_user_error
from tinygpt.cli.paths import root_dir
from tinygpt.cli.run_dir import job_config_subdir
from tinygpt.generation.sampling import DECODERS, Decoder


def auto_precision() -> str:
    """bf16-mixed on a GPU that supports it, full float32 elsewhere."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


# What a directory name may hold, so that a path pasted back unquoted after `ckpt_path=` or
# `hydra.run.dir=` is one plain string to Hydra and one word to the shell. Hydra's override
# lexer (hydra/grammar/OverrideLexer.g4) reads `=`, `,`, brackets and quotes as syntax (`,` even
# makes a multirun sweep); the shell reads `$ * ? | \` and spaces. `:` would pass both but makes
# scp and rsync see a host name, and Windows refuses it.
UNSAFE_NAME_CHARACTER = re.compile(r"[^A-Za-z0-9_.+-]")


def safe_name(text: str) -> str:
    """A directory name from any text: characters outside ``[A-Za-z0-9_.+-]`` become ``_``."""
    return UNSAFE_NAME_CHARACTER.sub("_", text)[:120] or "default"


SWEEP_FUNCTIONS = ("range(", "choice(", "interval(", "glob(", "tag(")


def swept_keys(argv: Sequence[str]) -> set[str]:
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


def sweep_job_name(
    task_overrides: list[str],
    sweeper_params: Mapping[str, object] | None = None,
    *,
    command_line_sweeps: Iterable[str] = (),
) -> str:
    """A job directory name from the values this job takes for the swept keys.

    ``python train.py -m model=dense,moe seed=1,2 trainer.max_steps=500`` names its jobs
    ``model-dense+seed-1`` and so on (``key-value``, joined by ``+``), leaving out what all jobs
    share: readable as a TensorBoard run name, and free of the ``=`` and ``,`` that Hydra would
    read as syntax when the path is pasted back after ``ckpt_path=``. The job number Hydra puts in
    front keeps names unique. The swept keys are those swept on the command line
    (``command_line_sweeps``) and in the sweeper's config (``hydra.sweeper.params``: an Optuna
    search space). With none, all of the job's overrides.
    """
    swept = set(command_line_sweeps)
    swept |= swept_keys([f"{key}={value}" for key, value in (sweeper_params or {}).items()])
    chosen = [o for o in task_overrides if o.partition("=")[0].lstrip("+~") in swept]
    return safe_name("+".join(_label(o) for o in chosen or task_overrides))


def _label(override: str) -> str:
    """``key=value`` as ``key-value``, a float to 4 significant digits (``optim.lr-0.001235``):
    a sampled float's 17 digits make an unreadable name."""
    key, _, value = override.partition("=")
    if re.fullmatch(r"[+-]?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE][+-]?\d+)", value):
        value = f"{float(value):.4g}"  # integers, names and lists stay as written
    return f"{key}-{value}"


def parallel_jobs(n_jobs: int | None) -> int:
    """How many jobs a launcher runs at once, read joblib's way: -1 every core, -2 all but one.

    An Optuna sweeper asks for this many trials at a time; it fails on joblib's default of -1.
    """
    if n_jobs is None:
        return 1
    if n_jobs < 0:
        return max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    return max(1, n_jobs)


class ParallelJobsCheck(Callback):
    """Refuses ``hydra.launcher.n_jobs=0`` (joblib's own error is a traceback), before any job.

    It exits itself: Hydra turns exceptions raised in callbacks into warnings and goes on.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: object) -> None:
        if OmegaConf.select(config, "hydra.launcher.n_jobs") == 0:
            exit_with_user_error(
                "hydra.launcher.n_jobs must be the number of jobs at once (>= 1) or -1 for "
                "every core (-2 all but one, ...), got 0"
            )


class SweepResumeNotice(Callback):
    """Says, before any job starts, how a sweep rerun with ``ckpt_path=last`` continues."""

    def on_multirun_start(self, config: DictConfig, **kwargs: object) -> None:
        if OmegaConf.select(config, "ckpt_path") != "last":
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.exists():
            print(
                f"ckpt_path=last: {sweep_dir} is a new sweep directory, with nothing to resume; "
                "give the interrupted sweep's hydra.sweep.dir",
                flush=True,
            )
            return
        print(
            f"resuming the sweep in {sweep_dir}: finished jobs are left as they are, "
            "interrupted ones resume from their last.ckpt, the others start",
            flush=True,
        )
        sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_") or "")
        if (
            "optuna" in sweeper.lower()
            and OmegaConf.select(config, "hydra.sweeper.storage") is None
        ):
            print(
                "the Optuna study is not stored (hydra.sweeper.storage=null), so it starts "
                "again: its seeded sampler asks the same trials in the same order, and the "
                "finished ones are read back from their summary.json",
                flush=True,
            )


def epoch_steps(*args: object) -> int:
    """``${epoch_steps:max_chars,train_fraction,batch_size,block_size[,epochs]}``: see
    :func:`tinygpt.training.epochs.epoch_steps` (imported here, on use: it needs Lightning)."""
    from tinygpt.training.epochs import epoch_steps as steps

    return steps(*args)


def register_resolvers(argv: Sequence[str] | None = None) -> None:
    """Register the resolvers conf/ uses; ``argv``: the command's arguments (None: this
    process's command line), whose swept keys name a sweep's job directories."""
    OmegaConf.register_new_resolver("root_dir", root_dir, replace=True)
    OmegaConf.register_new_resolver("auto_precision", auto_precision, replace=True)
    OmegaConf.register_new_resolver("safe_name", safe_name, replace=True)
    OmegaConf.register_new_resolver("parallel_jobs", parallel_jobs, replace=True)
    # conf/decoder/: a setting of the named decoder. An unknown name reads the plain sampler's,
    # and generate refuses the name itself: an error raised while resolving loses its message.
    OmegaConf.register_new_resolver(
        "decoder", lambda name, key: getattr(DECODERS.get(name, Decoder()), key), replace=True
    )
    OmegaConf.register_new_resolver("job_config_subdir", job_config_subdir, replace=True)
    OmegaConf.register_new_resolver("epoch_steps", epoch_steps, replace=True)
    # The command line is read here, in the process that parses it: launcher plugins (joblib,
    # submitit, SLURM) resolve a job's directory in a worker process whose sys.argv is not the
    # sweep's. Hydra hands its registered resolvers, with this argument, to those workers.
    arguments = sys.argv[1:] if argv is None else argv
    job_name = partial(sweep_job_name, command_line_sweeps=frozenset(swept_keys(arguments)))
    OmegaConf.register_new_resolver("sweep_job_name", job_name, replace=True)
