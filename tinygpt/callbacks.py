"""Lightning callbacks that TinyGPT adds to the Trainer."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from tinygpt.errors import ConfigError


class TokenThroughput(Callback):
    """Logs training tokens per second, the time spent in validation left out.

    ``tokens`` and ``train_seconds`` accumulate over the whole fit for the run summary.
    """

    def __init__(self, log_every_n_steps: int = 50) -> None:
        self.log_every_n_steps = log_every_n_steps
        self.tokens = 0
        self.train_seconds = 0.0
        self._window_tokens = 0
        self._window_seconds = 0.0
        self._last = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        elapsed, self._last = now - self._last, now
        tokens = batch[0].numel() * trainer.world_size
        self.tokens += tokens
        self.train_seconds += elapsed
        self._window_tokens += tokens
        self._window_seconds += elapsed
        if trainer.global_step % self.log_every_n_steps == 0 and self._window_seconds > 0:
            rate = self._window_tokens / self._window_seconds
            pl_module.log("train/tokens_per_second", rate, prog_bar=True)
            self._window_tokens, self._window_seconds = 0, 0.0

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = time.perf_counter()  # the next step's time starts after validation


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
