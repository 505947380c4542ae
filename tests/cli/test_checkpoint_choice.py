"""generate.py's checkpoint when none is given: the newest run's best.ckpt, named on stderr."""

import json
import os
from pathlib import Path

import pytest
import torch

from tinygpt.cli.paths import describe_choice, newest_run_checkpoint, recorded_progress
from tinygpt.errors import CheckpointError

# Lightning stores each callback's state under a key naming the callback and its settings.
MODEL_CHECKPOINT_KEY = "ModelCheckpoint{'monitor': 'val/loss', 'mode': 'min'}"


def write_checkpoint(
    path: Path, step: int, mtime: float, best: float | None = None, current: float | None = None
) -> Path:
    """A checkpoint file with what Lightning records: the step and ModelCheckpoint's scores."""
    state = {"monitor": "val/loss", "best_model_score": None, "current_score": None}
    if best is not None:
        state["best_model_score"] = torch.tensor(best)
    if current is not None:
        state["current_score"] = torch.tensor(current)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "callbacks": {MODEL_CHECKPOINT_KEY: state}}, path)
    os.utime(path, (mtime, mtime))
    return path


def write_run(run: Path, step: int, val_loss: float, written: float) -> tuple[Path, Path]:
    """A finished run: best.ckpt at its best validation, last.ckpt a moment later."""
    best = write_checkpoint(run / "checkpoints" / "best.ckpt", step, written, val_loss, val_loss)
    last = write_checkpoint(run / "checkpoints" / "last.ckpt", step, written + 1, val_loss, 2.5)
    return best, last


def test_a_short_sweeps_last_ckpt_no_longer_wins_over_best(tmp_path):
    # The case: a 2000-step run, then a 200-step MoE sweep over num_experts. The newest
    # file is the sweep's last job's last.ckpt, which the old rule (newest *.ckpt) took.
    outputs = tmp_path / "outputs"
    write_run(outputs / "runs" / "2026-01-01_10-00-00", 2000, 1.9195, written=1000)
    sweep = outputs / "multirun" / "2026-01-01_11-00-00"
    for job, experts in enumerate((2, 4, 8)):
        write_run(sweep / f"{job}_model.num_experts-{experts}", 200, 2.40 - job / 10, 2000 + job)
    newest_file = max(outputs.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    assert newest_file.name == "last.ckpt"

    chosen = newest_run_checkpoint(outputs)
    assert chosen == sweep / "2_model.num_experts-8" / "checkpoints" / "best.ckpt"
    assert recorded_progress(chosen) == (200, pytest.approx(2.2))
    # What the user reads on stderr: which checkpoint of which run, its step and val loss.
    assert describe_choice(chosen) == (
        f"using the newest run's best.ckpt (step 200, val loss 2.2000): {chosen}"
    )


def test_the_newest_run_is_the_one_that_wrote_a_checkpoint_last(tmp_path):
    # The long run was resumed after the sweep: its last.ckpt is the newest write of all, so it
    # is the newest run, and its best.ckpt (older than any sweep file) is the one used.
    long_best, long_last = write_run(tmp_path / "runs" / "long", 2000, 1.9195, written=1000)
    write_run(tmp_path / "multirun" / "s" / "0_seed-1", 200, 2.3, written=2000)
    os.utime(long_last, (3000, 3000))
    chosen = newest_run_checkpoint(tmp_path)
    assert chosen == long_best
    assert recorded_progress(chosen) == (2000, pytest.approx(1.9195))


def test_a_run_without_best_ckpt_falls_back_to_last_ckpt(tmp_path):
    write_run(tmp_path / "runs" / "old", 2000, 1.9, written=1000)
    # Killed before its first validation: only last.ckpt, and no val loss anywhere.
    last = write_checkpoint(tmp_path / "runs" / "new" / "checkpoints" / "last.ckpt", 40, 2000)
    chosen = newest_run_checkpoint(tmp_path)
    assert (chosen, *recorded_progress(chosen)) == (last, 40, None)
    assert describe_choice(chosen) == (
        f"using the newest run's last.ckpt (no best.ckpt; step 40, no val loss recorded): {last}"
    )


def test_the_val_loss_falls_back_to_the_runs_summary(tmp_path):
    # A checkpoint without ModelCheckpoint's state (its callback switched off, say).
    run = tmp_path / "runs" / "r"
    path = run / "checkpoints" / "best.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({"global_step": 300}, path)
    (run / "summary.json").write_text(json.dumps({"best_val_loss": 2.125}))
    assert recorded_progress(newest_run_checkpoint(tmp_path)) == (300, 2.125)


def test_unreadable_checkpoint_is_still_chosen_for_the_loader_to_report(tmp_path):
    path = tmp_path / "runs" / "r" / "checkpoints" / "best.ckpt"
    path.parent.mkdir(parents=True)
    path.write_text("not a checkpoint\n")
    chosen = newest_run_checkpoint(tmp_path)
    assert (chosen, *recorded_progress(chosen)) == (path, None, None)
    assert "step unknown, no val loss recorded" in describe_choice(chosen)


@pytest.mark.parametrize("layout", ["empty", "missing", "loose checkpoints"])
def test_no_run_is_one_clear_error(tmp_path, layout):
    root = tmp_path / "outputs"
    if layout == "empty":
        root.mkdir()
    elif layout == "loose checkpoints":  # *.ckpt files outside any run's checkpoints/
        write_checkpoint(root / "a" / "model.ckpt", 10, 1000, 2.0)
        write_checkpoint(root / "b" / "best.ckpt", 10, 1000, 2.0)
    with pytest.raises(CheckpointError) as error:
        newest_run_checkpoint(root)
    assert str(error.value) == (
        f"no ckpt_path given and no run under {root}/ has checkpoints/best.ckpt or last.ckpt; "
        "give one with ckpt_path=PATH"
    )
