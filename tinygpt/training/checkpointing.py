"""Checkpoints during training: last.ckpt kept current (also on a signal and on SLURM's requeue
signal), and checkpoint I/O that never leaves a truncated file and never unpickles code."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from tinygpt.checkpoint import load_checkpoint
from tinygpt.files import atomic_write
from tinygpt.generation.sampling import check_int

# Signals that stop a run with a checkpoint: `kill`, a scheduler's time limit, Ctrl-C.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SafeCheckpointIO(TorchCheckpointIO):
    """Atomic saves and weights-only loads.

    A crash or a full disk at any moment leaves either the previous checkpoint or the new one at
    ``path`` (:func:`tinygpt.files.atomic_write`), and a failed save stops the run with one line
    naming the file; resuming goes through the same allowlisted loader as generation, so a
    crafted checkpoint cannot run code.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        with atomic_write(path) as f:
            torch.save(checkpoint, f)

    def load_checkpoint(
        self, path: str | Path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_checkpoint(path)


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``: Lightning's ``ModelCheckpoint(save_last=True, every_n_train_steps=N)``,
    also saved at the end of training and when a signal stops the run.

    What Lightning does not give, and this adds:

    * A save at the end: ModelCheckpoint saves the last step only when it is a multiple of N.
    * SIGTERM and Ctrl-C stop with a checkpoint, exiting 143 and 130 as a shell reports a
      process killed by them, with the command that resumes. Lightning's SIGTERM handling stops
      without one and exits 0; its ``OnExceptionCheckpoint`` saves on *any* exception (made to
      write last.ckpt, a resume refused for another vocabulary would overwrite it with the
      unrestored model), and Ctrl-C interrupts a step anywhere.
    * SLURM's requeue signal (under ``SLURMEnvironment(auto_requeue=True)``, which Lightning
      picks on SLURM) is answered by Lightning's own handler, which saves ``hpc_ckpt_<n>.ckpt``
      and runs ``scontrol requeue``, but at the point where a signal stop would save: Lightning
      runs it inside the signal handler, anywhere in a step or a validation (whose running mean
      is not saved, so the resumed run would finish that validation on part of the split).

    A signal only sets a flag. The checkpoint is written after the optimizer step, once the
    step's validation (if one follows) has finished: weights, optimizer, schedule, step counter
    and best val loss then agree, so a run resumed from it continues exactly.
    """

    def __init__(self, dirpath: str, every_n_steps: int = 250) -> None:
        check_int("callbacks.last_checkpoint.every_n_steps", every_n_steps, 1)
        super().__init__(
            dirpath=dirpath,
            save_last=True,
            save_top_k=0,
            every_n_train_steps=every_n_steps,
            enable_version_counter=False,  # always last.ckpt, never last-v1.ckpt
        )
        self.path = Path(dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"
        self.resume_hint = "resume with the same command plus ckpt_path=last"
        self._stop: signal.Signals | None = None
        self._requeue: signal.Signals | None = None
        self._requeue_handler: Any = None  # Lightning's, for SLURM's requeue signal
        self._deferred_at: int | None = None  # the step whose validation a signal waits for
        self._previous_handlers: dict[signal.Signals, Any] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            self._install_handlers(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # Lightning registers its signal handlers after setup, chaining ours behind its own
        # SIGTERM handler (which would stop training without a checkpoint): ours replace them.
        self._install_handlers(trainer)

    def _install_handlers(self, trainer: L.Trainer) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python takes signal handlers on the main thread only (a notebook's thread)
        for sig in STOP_SIGNALS:
            self._previous_handlers.setdefault(sig, signal.getsignal(sig))
            signal.signal(sig, self._on_stop_signal)
        environment = trainer._accelerator_connector.cluster_environment  # as Lightning reads it
        if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
            sig = environment.requeue_signal
            self._previous_handlers.setdefault(sig, signal.getsignal(sig))  # before Lightning's
            handler = signal.getsignal(sig)
            if handler not in (None, signal.SIG_DFL, signal.SIG_IGN, self._on_requeue_signal):
                self._requeue_handler = handler  # Lightning's, registered for this fit
                signal.signal(sig, self._on_requeue_signal)

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        self._stop = signal.Signals(signum)

    def _on_requeue_signal(self, signum: int, frame: Any) -> None:
        self._requeue = signal.Signals(signum)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._stop is None and self._requeue is None:
            return
        waited = self._deferred_at is not None and self._deferred_at < trainer.global_step
        if not waited and _validation_follows(trainer):
            self._deferred_at = trainer.global_step  # act once the validation has finished
        else:
            if self._stop is not None:
                _log_this_step(trainer)
            self._act_on_signals(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if self._deferred_at is not None and not trainer.sanity_checking:
            self._act_on_signals(trainer)

    def _act_on_signals(self, trainer: L.Trainer) -> None:
        self._deferred_at = None
        if self._requeue is not None:
            signum, self._requeue = self._requeue, None
            self._requeue_handler(signum, None)  # hpc checkpoint, scontrol requeue
        if self._stop is None:
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        if trainer.is_global_zero:
            print(
                f"\n{self._stop.name} received: saved {self.path} at step "
                f"{trainer.global_step}; {self.resume_hint}",
                file=sys.stderr,
                flush=True,
            )
        raise SystemExit(128 + self._stop.value)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception) -> None:
        super().on_exception(trainer, pl_module, exception)  # saves nothing: save_on_exception off
        self._restore_handlers()  # a failed fit skips the teardown hooks

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().teardown(trainer, pl_module, stage)
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers.clear()


def _log_this_step(trainer: L.Trainer) -> None:
    """Send this training step's metrics to the loggers, as Lightning does once the
    on_train_batch_end hooks have returned: a run that stops inside them would otherwise leave
    a gap at this step in its curves (the resumed run starts after it)."""
    trainer._logger_connector.on_batch_end()
    trainer._logger_connector.update_train_step_metrics()


def _validation_follows(trainer: L.Trainer) -> bool:
    """Whether Lightning validates after this training step (asked as its own loop asks; the
    last step always validates: TinyGPTModule stops there)."""
    epoch_loop = trainer.fit_loop.epoch_loop
    if trainer.global_step >= trainer.max_steps:
        return True
    return epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher)
