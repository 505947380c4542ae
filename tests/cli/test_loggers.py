"""train.py's logger group: logger=csv writes metrics.csv, and the plots and the report read it;
logger=many writes TensorBoard's events and the CSV file, which hold the same values."""

import json
from pathlib import Path

import pytest
from helpers import PNG_MAGIC, TINY_RUN, compose_task, session_count

from tinygpt.analysis.plots import read_scalars
from tinygpt.cli import commands
from tinygpt.cli.train import train

PLOTS = ["grad_norm.png", "loss.png", "lr.png", "val_ppl.png"]


def train_run(run_dir: Path, text: Path, *overrides: str) -> dict:
    """A tiny training run in this process, as train.py runs it; its summary."""
    train(compose_task("train", [*TINY_RUN, f"data.path={text}", *overrides], run_dir))
    return json.loads((run_dir / "summary.json").read_text())


def assert_plots(run_dir: Path) -> None:
    assert {p.name for p in (run_dir / "plots").glob("*.png")} >= set(PLOTS)
    for name in PLOTS:
        assert (run_dir / "plots" / name).read_bytes().startswith(PNG_MAGIC), name


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    from helpers import TINY_TEXT

    path = tmp_path_factory.mktemp("text") / "tiny.txt"
    path.write_text(TINY_TEXT)
    return path


def test_logger_csv_writes_metrics_csv_and_its_plots_and_the_report_reads_it(text, tmp_path):
    run = tmp_path / "run"
    summary = train_run(run, text, "logger=csv", "model=moe", "callbacks.sample_text=null")
    assert (run / "csv" / "version_0" / "metrics.csv").is_file()
    assert not (run / "tb").exists()  # no TensorBoard logger, no events (nor HParams session)
    assert_plots(run)
    scalars = read_scalars(run)
    assert [step for step, _ in scalars["val/loss"]] == [9, 19]
    assert scalars["val/loss"][-1][1] == pytest.approx(summary["final_val_loss"], abs=1e-6)
    assert {"train/loss", "train/lr/decay", "train/grad_norm", "moe/layer0/load/expert0"} <= set(
        scalars
    )

    # The report reads the CSV-only run: its val loss curve and its experts' load.
    out = tmp_path / "report"
    assert commands.main(["report", str(run), "--out", str(out), "--no-decoding"]) == 0
    text_md = (out / "report.md").read_text()
    assert "share of tokens per expert" in text_md
    loads = {e: scalars[f"moe/layer0/load/expert{e}"][-1][1] for e in range(4)}
    row = "| 0 | " + " | ".join(f"{loads[e]:.3f}" for e in range(4))
    assert row in text_md
    assert (out / "val_loss.png").read_bytes().startswith(PNG_MAGIC)


def test_logger_many_writes_both_and_they_hold_the_same_values(text, tmp_path):
    run = tmp_path / "run"
    summary = train_run(run, text, "logger=many")
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert session_count(run) == 1  # the HParams row: TensorBoard only
    assert (run / "csv" / "version_0" / "metrics.csv").is_file()
    assert_plots(run)
    events, rows = read_scalars(run, logger="tensorboard"), read_scalars(run, logger="csv")
    # The HParams session's metrics (summary.json's values) are TensorBoard's only.
    events = {tag: points for tag, points in events.items() if not tag.startswith("summary/")}
    assert set(events) == set(rows) >= {"train/loss", "val/loss", "val/ppl", "train/lr/decay"}
    for tag in events:
        assert [s for s, _ in events[tag]] == [s for s, _ in rows[tag]], tag
        # Events hold float32; the CSV file Python's repr of the value logged.
        assert [v for _, v in events[tag]] == pytest.approx([v for _, v in rows[tag]], rel=1e-6)
    assert rows["val/loss"][-1][1] == pytest.approx(summary["final_val_loss"], abs=1e-6)


@pytest.mark.parametrize("no_logger", ["~logger", "logger=none"])
def test_no_logger_trains_and_keeps_its_checkpoints_and_summary(text, tmp_path, no_logger):
    # ~logger drops the group (logger=null is refused by Hydra in one line: test_train_cli).
    run = tmp_path / "run"
    summary = train_run(run, text, no_logger, "callbacks.sample_text=null")
    assert summary["steps"] == 20 and summary["final_val_loss"] is not None
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert not (run / "tb").exists() and not (run / "csv").exists()
