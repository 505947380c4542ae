"""End to end: train.py in a subprocess, as a user runs it."""

import json
import subprocess
from pathlib import Path

import pytest
import torch

from tinygpt.checkpoint import load_model

ROOT = Path(__file__).resolve().parents[1]
TINY_RUN = [
    "trainer=cpu",
    "trainer.max_steps=20",
    "trainer.val_check_interval=10",
    "trainer.log_every_n_steps=5",
    "model.block_size=16",
    "data.batch_size=8",
    "callbacks.attention_heatmap=null",  # off unless a test asks for it
]
SUMMARY_KEYS = {
    "best_val_loss",
    "final_val_loss",
    "steps",
    "tokens_seen",
    "wall_seconds",
    "train_tokens_per_second",
    "parameters",
}


def run_train(python: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_train_writes_checkpoints_events_and_summary(python, tiny_text_file, tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(python, *TINY_RUN, f"data.path={tiny_text_file}", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS
    assert summary["steps"] == 20
    assert summary["tokens_seen"] == 20 * 8 * 16
    assert summary["best_val_loss"] <= summary["final_val_loss"] + 1e-9
    assert summary["best_val_loss"] < 3.0  # well below ln(vocab) after 20 steps on repetitive text
    assert json.loads(result.stdout.strip().splitlines()[-1]) == summary
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    # Lightning's messages reach train.log, and the console once (not also through its handler).
    assert "`Trainer.fit` stopped: `max_steps=20` reached." in (run_dir / "train.log").read_text()
    assert result.stderr.count("GPU available:") + result.stdout.count("GPU available:") == 1
    for noise in ("Tip:", "transfer_batch_to_device", "LeafSpec"):  # filtered in train.py
        assert noise not in result.stderr + result.stdout, noise

    # The checkpoint alone rebuilds model and tokenizer, through a weights-only load.
    model = load_model(run_dir / "checkpoints" / "last.ckpt")
    assert model.config.block_size == 16
    ids = model.tokenizer.encode("First Citizen")[None]
    logits, _ = model(ids)
    assert logits.shape == (1, 13, model.tokenizer.vocab_size)
    assert torch.isfinite(logits).all()


def test_multirun_writes_one_directory_per_job(python, tiny_text_file, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_train(
        python,
        "-m",
        *TINY_RUN,
        "trainer.max_steps=10",
        "seed=1,2",
        f"data.path={tiny_text_file}",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr
    job_dirs = sorted(p.name for p in sweep.iterdir() if (p / "summary.json").is_file())
    # Job directories, hence TensorBoard run names, are named after the swept values.
    assert job_dirs == ["0_seed-1", "1_seed-2"]
    assert all(list((sweep / d / "tb").glob("events.out.tfevents.*")) for d in job_dirs)
    losses = [
        json.loads((sweep / d / "summary.json").read_text())["final_val_loss"] for d in job_dirs
    ]
    assert losses[0] != losses[1]  # different seeds, different runs


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.path=/nonexistent/file.txt", "data file not found"),
        ("data.batch_size=0", "data.batch_size must be an integer >= 1"),
        ("model.block_size=0", "model.block_size must be an integer >= 1"),
        ("model.n_head=5", "divisible"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(python, tiny_text_file, tmp_path, override, message):
    args = [*TINY_RUN, f"data.path={tiny_text_file}", f"hydra.run.dir={tmp_path / 'run'}", override]
    result = run_train(python, *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert not (tmp_path / "run" / "summary.json").exists()
