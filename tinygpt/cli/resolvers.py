"""OmegaConf resolvers used by the YAML files in conf/ (entry points register them first), and
the Hydra callbacks that act before a sweep's first job: a check of its launcher settings, and
what a sweep rerun with ``ckpt_path=last`` will do."""

import os
import re
from dataclasses import make_dataclass
from pathlib import Path

import torch
from hydra.core.config_store import ConfigStore
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from tinygpt.cli.errors import exit_with_user_error
from tinygpt.cli.paths import job_config_subdir, new_run_dir, root_dir
from tinygpt.generation.sampling import DECODERS, Decoder
from tinygpt.models import TinyGPTConfig


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
LONG_FLOAT = re.compile(r"\d+\.\d{5,}(?:[eE][+-]?\d+)?")


def safe_name(text: str) -> str:
    """A sweep job's directory name from ``hydra.job.override_dirname``: floats to 4 significant
    digits (an Optuna trial's 17 make an unreadable name), characters outside
    ``[A-Za-z0-9_.+-]`` as ``_``, at most 240 characters (the job number keeps names unique)."""
    short = LONG_FLOAT.sub(lambda found: f"{float(found[0]):.4g}", text)
    return UNSAFE_NAME_CHARACTER.sub("_", short)[:240] or "default"


def parallel_jobs(n_jobs: int | None) -> int:
    """How many jobs a launcher runs at once, read joblib's way: -1 every core, -2 all but one.

    An Optuna sweeper asks for this many trials at a time; it fails on joblib's default of -1.
    """
    if n_jobs is None:
        return 1
    if n_jobs < 0:
        return max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    return max(1, n_jobs)


class SweepStart(Callback):
    """Before a sweep's first job: refuses ``hydra.launcher.n_jobs=0`` (joblib's own error is a
    traceback), and says how a sweep rerun with ``ckpt_path=last`` continues.

    It exits itself: Hydra turns exceptions raised in callbacks into warnings and goes on.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: object) -> None:
        if OmegaConf.select(config, "hydra.launcher.n_jobs") == 0:
            exit_with_user_error(
                "hydra.launcher.n_jobs must be the number of jobs at once (>= 1) or -1 for "
                "every core (-2 all but one, ...), got 0"
            )
        if OmegaConf.select(config, "ckpt_path") != "last":
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.exists() or not any(sweep_dir.iterdir()):  # new_run_dir made it
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
        sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_"))
        if "optuna" in sweeper and OmegaConf.select(config, "hydra.sweeper.storage") is None:
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


def register_schemas() -> None:
    """Type conf/train.yaml's ``model``, ``optim`` and ``data`` by their dataclasses, so that
    OmegaConf checks each value's type as Hydra composes the config (the dataclasses check the
    ranges): each goes into Hydra's ConfigStore as ``schema/<key>``, with a ``_target_`` added,
    and train.yaml's defaults list puts it under the key's own values."""
    from tinygpt.data.datamodule import CharDataModule, DataConfig
    from tinygpt.training.optim import OptimConfig

    for key, schema, target in (
        ("model", TinyGPTConfig, TinyGPTConfig),
        ("optim", OptimConfig, OptimConfig),
        ("data", DataConfig, CharDataModule),
    ):
        path = f"{target.__module__}.{target.__qualname__}"
        node = make_dataclass(f"{key}_schema", [("_target_", str, path)], bases=(schema,))
        ConfigStore.instance().store(group="schema", name=key, node=node)


def register_resolvers() -> None:
    """Register the resolvers conf/ uses (entry points and tests, before composing)."""
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
    OmegaConf.register_new_resolver("new_run_dir", new_run_dir, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("epoch_steps", epoch_steps, replace=True)
