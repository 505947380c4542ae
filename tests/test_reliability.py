"""Nothing lost (atomic checkpoints, exact resume, signals, non-finite loss), nobody gets in."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_TEXT, CreatesFile

from tinygpt.checkpoint import load_checkpoint
from tinygpt.errors import CheckpointError
from tinygpt.training.checkpointing import SafeCheckpointIO

ROOT = Path(__file__).resolve().parents[1]
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


def train_command(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *RUN, *args]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        train_command(*args), cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def assert_one_line_error(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr


def wait_for(path_glob: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not list(path_glob.parent.glob(path_glob.name)):
        assert process.poll() is None, "training ended before the awaited file appeared"
        assert time.monotonic() < deadline, f"{path_glob} never appeared"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> tuple[Path, Path]:
    """An uninterrupted run: its directory and the text it trained on."""
    root = tmp_path_factory.mktemp("reference")
    text = root / "text.txt"
    text.write_text(TINY_TEXT)
    result = run(f"data.path={text}", f"hydra.run.dir={root / 'run'}")
    assert result.returncode == 0, result.stderr
    return root / "run", text


def test_killed_run_resumes_to_the_same_result(reference_run, tmp_path):
    reference_dir, text = reference_run
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        train_command(f"data.path={text}", f"hydra.run.dir={run_dir}"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(run_dir / "checkpoints" / "last.ckpt", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"]
    assert 10 <= killed_at < 200

    resumed = run(f"data.path={text}", f"hydra.run.dir={run_dir}", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr
    expected = json.loads((reference_dir / "summary.json").read_text())
    got = json.loads((run_dir / "summary.json").read_text())
    assert got["steps"] == expected["steps"] == 200
    assert abs(got["final_val_loss"] - expected["final_val_loss"]) <= 1e-6


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_a_checkpoint_and_says_how_to_resume(tiny_text_file, tmp_path, sig, code):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        train_command(
            "trainer.max_steps=100000",
            "callbacks.last_checkpoint.every_n_steps=1000000",
            f"data.path={tiny_text_file}",
            f"hydra.run.dir={run_dir}",
        ),
        cwd=ROOT,
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


def test_non_finite_loss_stops_with_a_clear_message(tiny_text_file, tmp_path):
    result = run("optim.lr=1e30", f"data.path={tiny_text_file}", f"hydra.run.dir={tmp_path}")
    assert_one_line_error(result, "training loss became nan")
    assert not (tmp_path / "summary.json").exists()


def test_interrupted_save_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    io = SafeCheckpointIO()
    io.save_checkpoint({"step": 1}, path)
    with pytest.raises(Exception):  # noqa: B017 - any failure mid-write
        io.save_checkpoint({"step": 2, "unpicklable": lambda: None}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_crafted_checkpoint_is_refused_and_runs_nothing(tiny_text_file, tmp_path):
    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.ckpt"
    torch.save({"tinygpt": {}, "state_dict": {}, "payload": CreatesFile(marker)}, crafted)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(crafted)
    result = run(
        f"ckpt_path={crafted}", f"data.path={tiny_text_file}", f"hydra.run.dir={tmp_path}/r"
    )
    assert_one_line_error(result, "refusing to load")
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
def test_bad_checkpoint_paths(reference_run, tmp_path, kind, message):
    reference_dir, text = reference_run
    path = bad_checkpoint(kind, tmp_path, reference_dir / "checkpoints" / "last.ckpt")
    result = run(f"ckpt_path={path}", f"data.path={text}", f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(result, message)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_checkpoint_of_another_vocabulary_is_refused(reference_run, tmp_path):
    reference_dir, _ = reference_run
    other = tmp_path / "other.txt"
    other.write_text("0123456789 abc\n" * 400)
    result = run(
        f"ckpt_path={reference_dir / 'checkpoints' / 'last.ckpt'}",
        f"data.path={other}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert_one_line_error(result, "another vocabulary")


def test_resume_last_without_a_checkpoint_is_refused(tiny_text_file, tmp_path):
    result = run("ckpt_path=last", f"data.path={tiny_text_file}", f"hydra.run.dir={tmp_path}")
    assert_one_line_error(result, "ckpt_path=last: no checkpoint")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("no_such_key=1", "Could not override 'no_such_key'"),
        ("model=no_such_model", "Could not find 'model/no_such_model'"),
        ("experiment=no_such_recipe", "Could not find 'experiment/no_such_recipe'"),
    ],
)
def test_config_mistakes_are_one_line(override, message):
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), override],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"},
    )
    assert_one_line_error(result, message)
