"""Reading scalars back from TensorBoard event files or the CSV logger's metrics.csv, and the
PNG plots made from them."""

import time
from pathlib import Path

import pytest
from lightning.pytorch.loggers import CSVLogger
from torch.utils.tensorboard import SummaryWriter

from tinygpt.analysis.plots import matching_series, plot_run, plot_val_curves, read_scalars

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(run_dir: Path, val_losses: list[float]) -> Path:
    """A run directory whose tb/ holds what a training run logs, with known values."""
    writer = SummaryWriter(log_dir=str(run_dir / "tb"))
    for step in range(0, 100, 10):
        writer.add_scalar("train/loss", 4.0 - step / 50, step)
        writer.add_scalar("train/lr/pg1", 1e-3 * step / 100, step)
        writer.add_scalar("train/lr/pg2", 1e-3 * step / 100, step)  # same lr, another group
        writer.add_scalar("train/grad_norm", 1.0 + step / 100, step)
    for i, loss in enumerate(val_losses):
        step = 25 * (i + 1)
        writer.add_scalar("val/loss", loss, step)
        writer.add_scalar("val/ppl", 2.718281828**loss, step)
    writer.close()
    return run_dir


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1024, path


def test_read_scalars_returns_every_point_sorted_by_step(tmp_path):
    run = write_run(tmp_path / "run", [3.0, 2.5, 2.25])
    scalars = read_scalars(run)
    assert {"train/loss", "val/loss", "val/ppl", "train/lr/pg1", "train/grad_norm"} <= set(scalars)
    assert scalars["val/loss"] == [(25, 3.0), (50, 2.5), (75, 2.25)]
    assert [s for s, _ in scalars["train/loss"]] == list(range(0, 100, 10))
    assert scalars["train/loss"][4][1] == pytest.approx(4.0 - 40 / 50)
    assert read_scalars(run / "tb") == scalars  # the event directory itself works too


def test_a_repeated_step_keeps_the_value_written_last(tmp_path):
    run = write_run(tmp_path / "run", [3.0, 2.5])
    # A resumed run: a second event file, named after a later second, as a new process's is
    # (within one second and process, file names order by a counter, "10" before "9").
    time.sleep(1.01 - time.time() % 1)
    writer = SummaryWriter(log_dir=str(run / "tb"))
    writer.add_scalar("val/loss", 2.375, 50)
    writer.add_scalar("val/loss", 2.0, 75)
    writer.close()
    assert read_scalars(run)["val/loss"] == [(25, 3.0), (50, 2.375), (75, 2.0)]


def test_missing_or_mixed_runs_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_scalars(tmp_path)
    write_run(tmp_path / "sweep" / "a", [3.0])
    write_run(tmp_path / "sweep" / "b", [3.0])
    with pytest.raises(ValueError, match="several runs"):
        read_scalars(tmp_path / "sweep")


def test_matching_series_merges_identical_param_groups():
    same = [(0, 1.0), (1, 2.0)]
    assert matching_series({"train/lr/pg1": same, "train/lr/pg2": list(same)}, "train/lr") == {
        "train/lr": same
    }
    other = [(0, 0.5)]
    found = matching_series({"train/lr/pg1": same, "train/lr/pg2": other}, "train/lr")
    assert found == {"train/lr/pg1": same, "train/lr/pg2": other}
    assert matching_series({"train/lrx": same}, "train/lr") == {}


def test_plot_run_writes_the_standard_plots(tmp_path):
    run = write_run(tmp_path / "run", [3.0, 2.5, 2.25])
    written = plot_run(run)
    names = sorted(p.name for p in written)
    assert names == ["grad_norm.png", "loss.png", "lr.png", "val_ppl.png"]
    for path in written:
        assert path.parent == run / "plots"
        assert_png(path)


def test_plot_run_skips_what_was_not_logged(tmp_path):
    writer = SummaryWriter(log_dir=str(tmp_path / "run" / "tb"))
    writer.add_scalar("val/loss", 3.0, 10)
    writer.close()
    written = plot_run(tmp_path / "run", tmp_path / "out")
    assert [p.name for p in written] == ["loss.png"]
    assert_png(tmp_path / "out" / "loss.png")


def test_plot_val_curves_overlays_runs(tmp_path):
    dense = write_run(tmp_path / "dense", [3.0, 2.5, 2.25])
    moe = write_run(tmp_path / "moe", [2.9, 2.4, 2.1])
    path = plot_val_curves({"dense": [dense], "moe": [moe]}, tmp_path / "val.png")
    assert_png(path)
    with pytest.raises(ValueError, match="logged no"):
        plot_val_curves({"dense": [dense]}, tmp_path / "x.png", tag="val/nope")


def write_csv_run(run_dir: Path, *sessions: dict[int, dict[str, float]]) -> Path:
    """A run directory whose csv/ holds what Lightning's CSVLogger (as conf/logger/csv.yaml
    sets it) writes, one version per session: ``{step: {tag: value}}``, a logging call each."""
    for session in sessions:
        logger = CSVLogger(save_dir=str(run_dir), name="csv")
        for step, metrics in session.items():
            logger.log_metrics(metrics, step=step)
        logger.save()
    return run_dir


def test_read_scalars_reads_the_csv_loggers_files(tmp_path):
    run = write_csv_run(
        tmp_path / "run",
        {
            0: {"train/loss": 4.0, "train/lr": 1e-4},
            10: {"train/loss": 3.5, "train/lr": 2e-4},
            19: {"val/loss": 3.25, "val/ppl": 25.8},  # a row of its own, other cells empty
        },
    )
    assert (run / "csv" / "version_0" / "metrics.csv").is_file()
    scalars = read_scalars(run)
    assert scalars == {
        "train/loss": [(0, 4.0), (10, 3.5)],
        "train/lr": [(0, 1e-4), (10, 2e-4)],
        "val/loss": [(19, 3.25)],
        "val/ppl": [(19, 25.8)],
    }
    assert read_scalars(run / "csv") == read_scalars(run, logger="csv") == scalars
    with pytest.raises(FileNotFoundError, match="TensorBoard"):
        read_scalars(run, logger="tensorboard")
    with pytest.raises(ValueError, match="logger must be one of tensorboard, csv"):
        read_scalars(run, logger="wandb")


def test_a_resumed_csv_run_adds_a_version_whose_values_win(tmp_path):
    first = {step: {"val/loss": 3.0 - step / 100} for step in (10, 20, 30)}
    resumed = {step: {"val/loss": 2.0 - step / 100} for step in (30, 40)}
    run = write_csv_run(tmp_path / "run", first, resumed)
    assert (run / "csv" / "version_1" / "metrics.csv").is_file()
    assert read_scalars(run)["val/loss"] == [(10, 2.9), (20, 2.8), (30, 1.7), (40, 1.6)]


def test_events_are_read_where_a_run_has_both_and_csv_runs_are_kept_apart(tmp_path):
    run = write_run(tmp_path / "run", [3.0])
    write_csv_run(run, {25: {"val/loss": 9.0}})
    assert read_scalars(run)["val/loss"] == [(25, 3.0)]  # the events by default
    assert read_scalars(run, logger="csv")["val/loss"] == [(25, 9.0)]
    write_csv_run(tmp_path / "sweep" / "a", {1: {"val/loss": 3.0}})
    write_csv_run(tmp_path / "sweep" / "b", {1: {"val/loss": 3.0}})
    with pytest.raises(ValueError, match="several runs"):
        read_scalars(tmp_path / "sweep")
    with pytest.raises(FileNotFoundError, match="no TensorBoard event files, no CSV"):
        read_scalars(tmp_path / "sweep" / "a" / "nothing-here")


def test_plot_run_draws_a_csv_only_run(tmp_path):
    run = write_csv_run(
        tmp_path / "run",
        {
            step: {"train/loss": 4.0 - step / 50, "train/lr": 1e-5 * step}
            for step in range(0, 50, 5)
        },
        {49: {"val/loss": 3.0, "val/ppl": 20.1}},
    )
    written = plot_run(run)
    assert sorted(p.name for p in written) == ["loss.png", "lr.png", "val_ppl.png"]
    for path in written:
        assert_png(path)
