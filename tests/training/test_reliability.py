"""Nothing lost (atomic checkpoints, exact resume, signals, non-finite loss), nobody gets in.

A killed or signalled run is a real train.py process; the refusals run the same command in this
process (tinygpt.cli.train.main)."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT, TINY_TEXT, CreatesFile, one_error_line, wait_for

from tinygpt.checkpoint import load_checkpoint
from tinygpt.cli import train as train_cli
from tinygpt.errors import CheckpointError
from tinygpt.training.checkpointing import SafeCheckpointIO

RUN = [
    "trainer=cpu",
    "trainer.max_steps=200",
    "trainer.val_check_interval=200",
    "trainer.log_every_n_steps=5",
    "callbacks.last_checkpoint.every_n_steps=10",
    "model.block_size=16",
    "model.dropout=0.1",  # resume must also replay the dropout noise
    "data.batch_size=8",
    "callbacks.attention_heatmap=null",  # off unless a test asks for it
]


def train_process(*args: str, **kwargs) -> subprocess.Popen:
    """``python train.py RUN ARGS``, started, for a test to interrupt."""
    command = [sys.executable, str(ROOT / "train.py"), *RUN, *args]
    return subprocess.Popen(command, cwd=ROOT, **kwargs)


def refused(capsys, *args: str) -> str:
    """Run train.py's command in this process; it must exit 2 with one ``error:`` line."""
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main([*RUN, *args])
    assert exit_info.value.code == 2
    return one_error_line(capsys.readouterr().err)


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text(TINY_TEXT)
    return path


@pytest.fixture(scope="module")
def short_run(text, tmp_path_factory) -> Path:
    """A finished ten-step run's directory, trained in this process."""
    run_dir = tmp_path_factory.mktemp("short") / "run"
    train_cli.main([*RUN, "trainer.max_steps=10", f"data.path={text}", f"hydra.run.dir={run_dir}"])
    return run_dir


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(text, tmp_path):
    reference_dir = tmp_path / "reference"  # the uninterrupted run
    train_cli.main([*RUN, f"data.path={text}", f"hydra.run.dir={reference_dir}"])
    run_dir = tmp_path / "run"
    process = train_process(
        f"data.path={text}",
        f"hydra.run.dir={run_dir}",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(run_dir / "checkpoints" / "last.ckpt", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"]
    assert 10 <= killed_at < 200

    train_cli.main([*RUN, f"data.path={text}", f"hydra.run.dir={run_dir}", "ckpt_path=last"])
    expected = json.loads((reference_dir / "summary.json").read_text())
    got = json.loads((run_dir / "summary.json").read_text())
    assert got["steps"] == expected["steps"] == 200
    assert abs(got["final_val_loss"] - expected["final_val_loss"]) <= 1e-6


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_a_checkpoint_and_says_how_to_resume(tiny_text_file, tmp_path, sig, code):
    run_dir = tmp_path / "run"
    process = train_process(
        "trainer.max_steps=100000",
        "callbacks.last_checkpoint.every_n_steps=1000000",
        f"data.path={tiny_text_file}",
        f"hydra.run.dir={run_dir}",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(run_dir / "tb" / "events.out.tfevents.*", process)  # training has started
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert f"{sig.name} received: saved" in stderr
    assert f"hydra.run.dir={run_dir} ckpt_path=last" in stderr
    assert "Traceback" not in stderr
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] > 0


def test_non_finite_loss_stops_with_a_clear_message(tiny_text_file, tmp_path, capsys):
    error = refused(
        capsys, "optim.lr=1e30", f"data.path={tiny_text_file}", f"hydra.run.dir={tmp_path}"
    )
    assert "training loss became nan" in error
    assert not (tmp_path / "summary.json").exists()


def test_interrupted_save_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    io = SafeCheckpointIO()
    io.save_checkpoint({"step": 1}, path)
    with pytest.raises(Exception):  # noqa: B017 - any failure mid-write
        io.save_checkpoint({"step": 2, "unpicklable": lambda: None}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_crafted_checkpoint_is_refused_and_runs_nothing(tiny_text_file, tmp_path, capsys):
    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.ckpt"
    torch.save({"tinygpt": {}, "state_dict": {}, "payload": CreatesFile(marker)}, crafted)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(crafted)
    args = [f"ckpt_path={crafted}", f"data.path={tiny_text_file}", f"hydra.run.dir={tmp_path}/r"]
    assert "refusing to load" in refused(capsys, *args)
    assert not marker.exists()


def bad_checkpoint(kind: str, tmp_path: Path, reference_ckpt: Path) -> Path:
    path = tmp_path / "bad.ckpt"
    if kind == "missing":
        return tmp_path / "nope.ckpt"
    if kind == "directory":
        return tmp_path
    if kind == "truncated":
        data = reference_ckpt.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "foreign":
        torch.save({"state_dict": {}}, path)
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "checkpoint not found"),
        ("directory", "is a directory"),
        ("truncated", "not a readable checkpoint"),
        ("text", "not a readable checkpoint"),
        ("foreign", "not a TinyGPT checkpoint"),
    ],
)
def test_bad_checkpoint_paths(short_run, text, tmp_path, capsys, kind, message):
    path = bad_checkpoint(kind, tmp_path, short_run / "checkpoints" / "last.ckpt")
    args = [f"ckpt_path={path}", f"data.path={text}", f"hydra.run.dir={tmp_path / 'run'}"]
    assert message in refused(capsys, *args)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_checkpoint_of_another_vocabulary_is_refused(short_run, tmp_path, capsys):
    other = tmp_path / "other.txt"
    other.write_text("0123456789 abc\n" * 400)
    args = [f"ckpt_path={short_run / 'checkpoints' / 'last.ckpt'}", f"data.path={other}"]
    assert "another vocabulary" in refused(capsys, *args, f"hydra.run.dir={tmp_path / 'run'}")


def test_resume_last_without_a_checkpoint_is_refused(tiny_text_file, tmp_path, capsys):
    args = ["ckpt_path=last", f"data.path={tiny_text_file}", f"hydra.run.dir={tmp_path}"]
    assert "ckpt_path=last: no checkpoint" in refused(capsys, *args)
