"""A resumed run's logged metrics: what the interrupted attempt logged after the checkpoint it
resumes from is dropped, from TensorBoard's event files and the CSV logger's rows, so that every
step of the run appears once.

The resumed run logs those steps again (into a new event file, or a new CSV version, beside the
old ones, exactly as the uninterrupted run would have); left in place, the old values would draw
a second line over the same steps. ``SummaryWriter(purge_step=...)`` asks readers to hide them
instead, which only some readers honour; rewriting the files works with all of them. It happens
once the resume is accepted (the checks of ``TinyGPTModule.on_load_checkpoint`` passed), before
anything new is logged: a refused resume leaves the files as they are.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.summary.writer.record_writer import RecordWriter

from tinygpt.analysis.plots import CSV_METRICS
from tinygpt.files import atomic_write

EVENTS_GLOB = "events.out.tfevents.*"


class ResumedEvents(Callback):
    """Drops what the run logged at or after the step of the checkpoint it resumes from
    (:func:`drop_logged_from`)."""

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.is_global_zero:
            drop_logged_from(trainer.loggers, checkpoint["global_step"])


def drop_logged_from(loggers: Sequence[Logger], step: int) -> int:
    """Drop what the TensorBoard and CSV loggers among ``loggers`` wrote at ``step`` or later;
    returns the number of summaries and rows dropped."""
    dropped = 0
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            dropped += drop_events_from(logger.log_dir, step)
        elif isinstance(logger, CSVLogger):
            dropped += drop_csv_rows_from(logger.root_dir, step)
    return dropped


def drop_events_from(event_dir: str | Path, step: int) -> int:
    """Rewrite the event files in ``event_dir`` without the summaries logged at ``step`` or
    later (Lightning logs the metrics of training step ``n`` at ``n - 1``, so a checkpoint at
    ``step`` holds everything logged before it). Files with nothing to drop are left as they
    are; returns the number of summaries dropped."""
    dropped = 0
    for path in sorted(Path(event_dir).glob(EVENTS_GLOB)):
        records = list(RawEventFileLoader(str(path)).Load())
        kept = [r for r in records if not _logged_from(Event.FromString(r), step)]
        if len(kept) == len(records):
            continue
        with atomic_write(path) as f:
            writer = RecordWriter(f)
            for record in kept:
                writer.write(record)
        dropped += len(records) - len(kept)
    return dropped


def _logged_from(event: Event, step: int) -> bool:
    return event.HasField("summary") and event.step >= step


def drop_csv_rows_from(csv_root: str | Path, step: int) -> int:
    """Rewrite each ``version_<n>/metrics.csv`` under ``csv_root`` without its rows logged at
    ``step`` or later (the same steps :func:`drop_events_from` drops); returns the rows dropped."""
    dropped = 0
    for path in sorted(Path(csv_root).glob(f"version_*/{CSV_METRICS}")):
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
        kept = [row for row in rows if int(row["step"]) < step]
        if len(kept) == len(rows):
            continue
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=reader.fieldnames)  # as CSVLogger writes it
        writer.writeheader()
        writer.writerows(kept)
        with atomic_write(path) as f:
            f.write(text.getvalue().encode())
        dropped += len(rows) - len(kept)
    return dropped
