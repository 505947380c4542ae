"""The run behind ``python train.py``: compose conf/train.yaml, instantiate, fit, summarise.

    python train.py                                  # the notebook's dense model on TinyShakespeare
    python train.py -m model.n_layer=2,4 seed=1,2    # a sweep, one run directory per job

:func:`main` is the command (Hydra reads its arguments and runs the job, or each job of a
sweep, through :func:`train`); tests compose a config and call :func:`train` in-process.
"""

import json
import os
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

import tinygpt.cli.quiet  # noqa: F401  (on import: Lightning's needless notices off)
from tinygpt.analysis.hparams import expert_load_balance, log_training_session
from tinygpt.cli import hydra_ddp, paths
from tinygpt.cli.errors import run_hydra_app, user_errors
from tinygpt.cli.quoting import resume_overrides, shell_word
from tinygpt.cli.resolvers import register_resolvers, register_schemas
from tinygpt.data.datamodule import CharDataModule
from tinygpt.errors import require
from tinygpt.files import write_text_atomic
from tinygpt.training import TinyGPTModule
from tinygpt.training.callbacks import TokenThroughput, tensorboard_dir
from tinygpt.training.checkpointing import LastCheckpoint

# The entry script next to conf/: what DDP ranks re-run, and what the resume command names.
TRAIN_SCRIPT = paths.PROJECT_ROOT / "train.py"

# The first job of the launching process counts its wall time from launch (main's `launched`);
# later jobs of a multirun, which share the process, from their own start. So do jobs in a
# launcher's worker processes (joblib, submitit), which import this module afresh or, forked,
# inherit the list with another process's pid.
_unclaimed_launch: list[tuple[int, float]] = []


def job_start_time() -> float:
    """When this job started, for its ``wall_seconds``: the launch for the first job, else now."""
    if _unclaimed_launch and _unclaimed_launch[0][0] == os.getpid():
        return _unclaimed_launch.pop()[1]
    return time.time()


def train(cfg: DictConfig) -> float:
    """One training job of a composed config (HydraConfig set): fit, write summary.json, log
    the run's HParams session; returns the best val loss (what an Optuna search minimises).

    With ``ckpt_path=last`` a job that already finished (its summary.json is for this
    ``trainer.max_steps``) is left as it is; this is what makes a rerun sweep continue.
    """
    started = job_start_time()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.ckpt_path == "last":
        finished = paths.finished_summary(run_dir, cfg.trainer.max_steps)
        if finished is not None:
            print(f"{run_dir}: finished ({cfg.trainer.max_steps} steps); left as it is", flush=True)
            return finished["best_val_loss"]
    check_settings(cfg)
    # DDP ranks > 0 are this job's own processes: rank 0 holds the lock.
    with paths.run_dir_lock(run_dir) if rank_zero_only.rank == 0 else nullcontext():
        return _fit(cfg, run_dir, started)


def _fit(cfg: DictConfig, run_dir: Path, started: float) -> float:
    hydra_ddp.install(str(TRAIN_SCRIPT))
    L.seed_everything(cfg.seed, verbose=False)
    torch.set_float32_matmul_precision("high")  # TF32 matmuls on GPUs that have them
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup()
    module = TinyGPTModule(
        model_config=instantiate(cfg.model, vocab_size=datamodule.tokenizer.vocab_size),
        tokenizer=datamodule.tokenizer,
        optim=instantiate(cfg.optim),
        run_config=OmegaConf.to_container(cfg, resolve=True),
        data_fingerprint=datamodule.fingerprint,  # the token cache's: the text is hashed once
        allow_data_change=cfg.resume_data_change == "allow",
    )
    in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    ckpt_path = paths.resolve_ckpt_path(cfg.ckpt_path, run_dir, in_sweep, requeued=slurm_requeued())
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    for callback in callbacks:
        if isinstance(callback, LastCheckpoint):
            callback.resume_hint = f"resume with: {resume_command(run_dir)}"
    # Every attempt's TensorBoard events start with purge_step, the step it starts from: readers
    # then hide what an interrupted attempt logged from there on (TensorBoard's Python reader
    # ignores the first purge of a run, hence 0 for a fresh one). CSV rows need nothing: the
    # project's reader keeps a step's last value (tinygpt.analysis.plots.read_scalars).
    start_step = paths.recorded_progress(Path(ckpt_path))[0] if ckpt_path else 0
    loggers = [_logger(lg, start_step) for lg in (cfg.get("logger") or {}).values() if lg]
    if not loggers:  # ~logger (no logger): nothing for the learning-rate monitor to log to
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    with hydra_ddp.job_scope():
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)

    summary = run_summary(trainer, module, datamodule, started)
    if trainer.is_global_zero:
        # The HParams dashboard's row for this run: its settings, and the summary's metrics.
        overrides = HydraConfig.get().overrides.task
        log_training_session(
            tensorboard_dir(trainer), module.run_config, overrides, summary, start=started
        )
        # Last: a summary.json for trainer.max_steps marks the job finished (ckpt_path=last).
        write_text_atomic(run_dir / paths.SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
        print(json.dumps(summary))
    return summary["best_val_loss"]


def _logger(config: DictConfig, start_step: int | None) -> Logger:
    tensorboard = issubclass(get_class(config._target_), TensorBoardLogger)
    return instantiate(config, **({"purge_step": start_step} if tensorboard else {}))


def check_settings(cfg: DictConfig) -> None:
    """``resume_data_change``, and the debugging switches that Lightning takes silently
    (limit_train_batches=0), refuses naming another key (overfit_batches=0.1), or fails on with
    a traceback (detect_anomaly=yes, accumulate_grad_batches=0). Lightning refuses a bad
    fast_dev_run, limit_val_batches or profiler in one line itself. Training is an endless
    stream of batches: no fraction of it means a thing."""
    data_change = cfg.resume_data_change  # refuse: a resume on another text than the checkpoint's
    require(
        data_change in ("refuse", "allow"),
        f"resume_data_change must be refuse or allow, got {data_change!r}",
    )
    trainer = cfg.trainer
    limit, overfit = trainer.get("limit_train_batches"), trainer.get("overfit_batches", 0)
    require(
        limit in (None, 1.0) or (type(limit) is int and limit >= 1),
        "trainer.limit_train_batches must be an integer >= 1 (batches per epoch) or null: training "
        f"is an endless stream of batches, whose length is trainer.max_steps, got {limit!r}",
    )
    require(
        overfit == 0 or (type(overfit) is int and overfit > 0),
        "trainer.overfit_batches must be a number of batches >= 0 (0: off), not a fraction of "
        f"an endless stream, got {overfit!r}",
    )
    anomaly = trainer.get("detect_anomaly", False)
    require(
        isinstance(anomaly, bool), f"trainer.detect_anomaly must be true or false, got {anomaly!r}"
    )
    accumulate = trainer.get("accumulate_grad_batches", 1)
    require(
        type(accumulate) is int and accumulate >= 1,
        f"trainer.accumulate_grad_batches must be an integer >= 1, got {accumulate!r}",
    )


def slurm_requeued() -> bool:
    """Whether this is a SLURM job that SLURM requeued (preempted, or ``scontrol requeue``)."""
    return SLURMEnvironment.detect() and int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0


def run_summary(
    trainer: L.Trainer, module: TinyGPTModule, datamodule: CharDataModule, started: float
) -> dict[str, Any]:
    """What summary.json holds: the val losses, steps, tokens, wall time and speed of a fit."""
    best = next((c for c in trainer.checkpoint_callbacks if c.monitor == "val/loss"), None)
    throughput = next(c for c in trainer.callbacks if isinstance(c, TokenThroughput))
    final_val = trainer.callback_metrics.get("val/loss")
    if final_val is None and trainer.ckpt_path:
        # Resumed from a checkpoint of the last step (stopped before its summary was written):
        # nothing left to train or validate; the last validation's loss is in the checkpoint.
        _, final_val = paths.recorded_progress(Path(trainer.ckpt_path))
    trained = throughput.train_seconds > 0  # not so when resumed at the last step
    step_tokens = trainer.accumulate_grad_batches * trainer.world_size * datamodule.batch_size
    return {
        "best_val_loss": _number(best.best_model_score if best else final_val),
        "final_val_loss": _number(final_val),
        "steps": trainer.global_step,
        "tokens_seen": trainer.global_step * step_tokens * datamodule.block_size,
        "wall_seconds": round(time.time() - started, 2),
        "train_tokens_per_second": (
            round(throughput.tokens / throughput.train_seconds) if trained else None
        ),
        "parameters": module.model.num_parameters(),
        # MoE only: from the expert loads last logged, as TensorBoard's moe/ scalars show them.
        **expert_load_balance(trainer.callback_metrics),
    }


def resume_command(run_dir: Path) -> str:
    """The command line that continues this run from its last.ckpt, to paste into a shell."""
    script = TRAIN_SCRIPT
    if script.is_relative_to(Path.cwd().resolve()):
        script = script.relative_to(Path.cwd().resolve())
    overrides = resume_overrides(HydraConfig.get().overrides.task, run_dir)
    return " ".join(shell_word(word) for word in ["python", str(script), *overrides])


def _number(value: object) -> float | None:
    return None if value is None else round(float(value), 6)


def _job(cfg: DictConfig) -> float:
    with user_errors():
        return train(cfg)


def main(argv: Sequence[str] | None = None, launched: float | None = None) -> None:
    """``python train.py ARGV`` (``argv`` None: this process's command line). ``launched``: when
    the command started, for the first job's wall time (default: now)."""
    _unclaimed_launch[:] = [(os.getpid(), time.time() if launched is None else launched)]
    register_resolvers()
    register_schemas()
    run_hydra_app("train", _job, argv)
