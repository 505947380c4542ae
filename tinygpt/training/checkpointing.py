"""Checkpoints during training: last.ckpt kept current (also on a signal), and checkpoint I/O
that never leaves a truncated file and never unpickles code."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from tinygpt.checkpoint import load_checkpoint
from tinygpt.errors import ConfigError


class SafeCheckpointIO(TorchCheckpointIO):
    """Atomic saves (temporary file, fsync, rename) and weights-only loads.

    A crash at any moment leaves either the previous checkpoint or the new one at ``path``,
    because ``os.replace`` swaps whole files; resuming goes through the same allowlisted loader
    as generation, so a crafted checkpoint cannot run code.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_name, path)
        finally:
            Path(tmp_name).unlink(missing_ok=True)

    def load_checkpoint(
        self, path: str | Path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_checkpoint(path)


class LastCheckpoint(Callback):
    """Keeps ``last.ckpt`` current: every ``every_n_steps``, at the end, and on SIGTERM/SIGINT.

    A signal only sets a flag; the checkpoint is written after the optimizer step, when weights,
    optimizer and step counter agree, so resuming from it is exact. The process then exits with
    128 + the signal number, as a shell reports a process killed by that signal.
    """

    def __init__(self, dirpath: str, every_n_steps: int = 250, filename: str = "last.ckpt") -> None:
        if every_n_steps < 1:
            raise ConfigError(f"checkpoint every_n_steps must be >= 1, got {every_n_steps!r}")
        self.path = Path(dirpath) / filename
        self.every_n_steps = every_n_steps
        self.resume_hint = "resume with the same command plus ckpt_path=last"
        self._received: signal.Signals | None = None
        self._saved_step = -1
        self._previous_handlers: dict[signal.Signals, object] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._install_handlers()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._saved_step = trainer.global_step  # a resumed run's checkpoint is already on disk
        # Lightning chains its own SIGTERM handler in front of ours after setup; on its own it
        # would stop training and exit 0 without a checkpoint, so ours replaces the chain.
        self._install_handlers()

    def _install_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous_handlers.setdefault(sig, signal.getsignal(sig))
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame) -> None:
        self._received = signal.Signals(signum)

    def _save(self, trainer: L.Trainer) -> None:
        if self._saved_step != trainer.global_step:
            trainer.save_checkpoint(self.path, weights_only=False)  # with optimizer state
            self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._received is not None:
            self._save(trainer)
            if trainer.is_global_zero:
                print(
                    f"\n{self._received.name} received: saved {self.path} at step "
                    f"{trainer.global_step}; {self.resume_hint}",
                    file=sys.stderr,
                    flush=True,
                )
            raise SystemExit(128 + self._received.value)
        if trainer.global_step % self.every_n_steps == 0:
            self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers.clear()
