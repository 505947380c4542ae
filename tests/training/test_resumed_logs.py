"""A resumed run drops what its interrupted attempt logged after the checkpoint, from the CSV
logger's rows as from TensorBoard's events (the journey: test_reliability's killed run)."""

from lightning.pytorch.loggers import CSVLogger

from tinygpt.analysis.plots import read_scalars
from tinygpt.training.resumed_events import drop_csv_rows_from, drop_logged_from


def csv_logger(run_dir, steps) -> CSVLogger:
    """A CSVLogger session (as conf/logger/csv.yaml sets it) that logged ``steps``."""
    logger = CSVLogger(save_dir=str(run_dir), name="csv")
    for step in steps:
        logger.log_metrics({"train/loss": 4.0 - step / 100, "val/loss": 3.0}, step=step)
    logger.save()
    return logger


def test_rows_at_or_after_the_step_are_dropped_and_the_rest_kept_as_written(tmp_path):
    run = tmp_path / "run"
    first = csv_logger(run, [4, 9, 14, 19])  # killed after a checkpoint at step 10
    untouched = csv_logger(tmp_path / "other", [4, 9])
    before = (tmp_path / "other" / "csv" / "version_0" / "metrics.csv").read_bytes()

    assert drop_csv_rows_from(first.root_dir, 10) == 2
    assert read_scalars(run, logger="csv")["train/loss"] == [(4, 3.96), (9, 3.91)]
    assert drop_csv_rows_from(untouched.root_dir, 10) == 0
    assert (tmp_path / "other" / "csv" / "version_0" / "metrics.csv").read_bytes() == before

    # The resumed session logs from step 10 on, in a version of its own: each step once.
    resumed = csv_logger(run, [14, 19])
    assert (run / "csv" / "version_1" / "metrics.csv").is_file()
    assert drop_logged_from([resumed], 20) == 0
    assert [s for s, _ in read_scalars(run, logger="csv")["train/loss"]] == [4, 9, 14, 19]
    assert not list((run / "csv").rglob("*.tmp"))


def test_a_job_started_again_from_scratch_keeps_only_the_csv_header(tmp_path):
    logger = csv_logger(tmp_path / "run", [4, 9])
    assert drop_logged_from([logger], 0) == 2
    lines = (tmp_path / "run" / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    assert lines == ["step,train/loss,val/loss"]
