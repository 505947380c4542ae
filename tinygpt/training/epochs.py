"""Epochs over a finite training split: how many steps one pass takes, and the loss per epoch.

Training draws random windows from an endless stream (:mod:`tinygpt.data.windows`), so
Lightning's own epoch never ends. The TinyGPT notebook reports its losses per epoch, a pass over
its training characters; here an epoch is the number of steps that draw as many characters as
the training split holds, ``ceil(train characters / (batch_size * block_size))`` on one device.
conf/experiment/notebook_100k.yaml validates once per epoch and adds :class:`EpochLoss`, which
logs both losses against the epoch.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from tinygpt.analysis.plots import TRAIN_TAG, VAL_TAG
from tinygpt.errors import require
from tinygpt.generation.sampling import check_int


def steps_per_epoch(train_tokens: int, batch_size: int, block_size: int) -> int:
    """Steps of ``batch_size`` windows of ``block_size`` characters that draw ``train_tokens``
    characters, rounded up: 90,000 characters in batches of 64 x 32 take 44 steps."""
    check_int("the training split's length", train_tokens, 1)
    tokens_per_step = check_int("data.batch_size", batch_size, 1) * check_int(
        "model.block_size", block_size, 1
    )
    return math.ceil(train_tokens / tokens_per_step)


def epoch_steps(
    max_chars: int | None,
    train_fraction: float,
    batch_size: int,
    block_size: int,
    epochs: int = 1,
) -> int:
    """``epochs`` epochs of a text cut to ``max_chars`` characters, in steps: the resolver
    ``${epoch_steps:...}`` that sets ``trainer.max_steps`` and ``trainer.val_check_interval``
    from ``data.max_chars`` (a config cannot know a whole file's length before reading it)."""
    require(
        max_chars is not None, "epochs are counted in data.max_chars characters; set it, got null"
    )
    train_tokens = int(train_fraction * check_int("data.max_chars", max_chars, 1))
    return check_int("epochs", epochs, 1) * steps_per_epoch(train_tokens, batch_size, block_size)


class EpochLoss(Callback):
    """Logs ``epoch/train_loss`` (the mean training loss of the epoch's steps) and
    ``epoch/val_loss`` (the validation at its end) through every logger, at step = the epoch.

    Validation must run at the end of each epoch (``trainer.val_check_interval`` equal to
    ``steps_per_epoch``); an epoch left unfinished at the end of training is not logged. The
    running sum is part of the checkpoint, so a resumed run continues the epoch it was in.
    ``epochs`` holds the logged ``(epoch, train_loss, val_loss)`` rows of this process.
    """

    def __init__(self, steps_per_epoch: int) -> None:
        self.steps_per_epoch = check_int("callbacks.epoch_loss.steps_per_epoch", steps_per_epoch, 1)
        self._sum = 0.0
        self._count = 0
        self.epochs: list[tuple[int, float, float]] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Refuse a data split whose length gives epochs of another number of steps (a text
        shorter than ``data.max_chars``)."""
        datamodule = trainer.datamodule
        train = getattr(datamodule, "train_data", None)
        if train is None:
            return
        actual = steps_per_epoch(len(train), datamodule.batch_size, datamodule.block_size)
        require(
            actual == self.steps_per_epoch,
            f"an epoch of this text's training split ({len(train)} characters) is {actual} steps, "
            f"not the configured {self.steps_per_epoch}: the text is shorter than "
            "data.max_chars; lower data.max_chars",
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # The language-model loss as logged: for MoE, without the routing losses added to it.
        self._sum += float(trainer.callback_metrics["train/loss"])
        self._count += 1

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if trainer.sanity_checking or step == 0 or step % self.steps_per_epoch or not self._count:
            return
        epoch = step // self.steps_per_epoch
        train_loss = self._sum / self._count
        val_loss = float(trainer.callback_metrics["val/loss"])
        self._sum, self._count = 0.0, 0
        self.epochs.append((epoch, train_loss, val_loss))
        for logger in trainer.loggers:
            logger.log_metrics({TRAIN_TAG: train_loss, VAL_TAG: val_loss}, step=epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"sum": self._sum, "count": self._count}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._sum, self._count = state_dict["sum"], state_dict["count"]
