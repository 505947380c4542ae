"""A resumed run's logs show each step once: TensorBoard's reader hides what an interrupted
attempt logged past the checkpoint (each attempt's events start with ``purge_step``), and the
project's reader takes each step's last CSV row (the journey: test_reliability's killed run)."""

import time

from helpers import scalar_events
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from tinygpt.analysis.plots import read_scalars


def log(logger, steps, value: float) -> None:
    for step in steps:
        logger.log_metrics({"train/loss": value + step / 100}, step=step)
    logger.finalize("success")


def test_tensorboard_hides_the_steps_an_interrupted_attempt_logged_past_the_checkpoint(tmp_path):
    # The attempts train.py would make: from scratch (killed after a checkpoint at step 10),
    # then resumed from that checkpoint. Without purge_step the reader would show 10..14 twice.
    log(TensorBoardLogger(tmp_path, name="", version="tb", purge_step=0), range(15), 4.0)
    time.sleep(1.01 - time.time() % 1)  # a new process's event file: named a second later
    log(TensorBoardLogger(tmp_path, name="", version="tb", purge_step=10), range(10, 20), 3.0)
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 2  # as written
    points = scalar_events(tmp_path)["train/loss"]  # every point TensorBoard's reader holds
    assert [s for s, _ in points] == list(range(20))
    assert all(abs(v - (4.0 if s < 10 else 3.0) - s / 100) < 1e-5 for s, v in points)


def test_csv_versions_read_as_one_run_with_the_resumed_values(tmp_path):
    log(CSVLogger(tmp_path, name="csv"), range(15), 4.0)  # version_0, killed
    log(CSVLogger(tmp_path, name="csv"), range(10, 20), 3.0)  # version_1, resumed
    points = read_scalars(tmp_path, logger="csv")["train/loss"]
    assert [s for s, _ in points] == list(range(20))
    assert all(v == (4.0 if s < 10 else 3.0) + s / 100 for s, v in points)
