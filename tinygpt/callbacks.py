"""Lightning callbacks that TinyGPT adds to the Trainer."""

from __future__ import annotations

import time

import lightning as L
from lightning.pytorch.callbacks import Callback


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
