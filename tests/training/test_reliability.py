"""Nothing lost (atomic checkpoints, exact resume, signals, non-finite loss), nobody gets in.

A killed or signalled run is a real train.py process; the refusals run the same command in this
process (tinygpt.cli.train.main)."""

import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import (
    ROOT,
    TINY_TEXT,
    CreatesFile,
    assert_same_events,
    file_bytes,
    one_error_line,
    wait_for,
)

from tinygpt.analysis.plots import read_scalars
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


def refused(capsys, *args: str, code: int = 2) -> str:
    """Run train.py's command in this process; it must exit ``code`` with one ``error:`` line."""
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main([*RUN, *args])
    assert exit_info.value.code == code
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
def test_a_killed_runs_logs_past_its_checkpoint_are_dropped_on_resume(text, tmp_path):
    # Killed (SIGKILL, sent from inside at step 17 by probes.SignalProbe) with last.ckpt at step
    # 10 and, from a CSV logger that writes every step, rows up to step 14 on disk.
    args = [
        "trainer.max_steps=30",
        "trainer.val_check_interval=10",
        "callbacks.last_checkpoint.every_n_steps=10",
        "logger=many",
        "+logger.csv.flush_logs_every_n_steps=1",
        f"data.path={text}",
    ]
    reference_dir, run_dir = tmp_path / "reference", tmp_path / "run"
    train_cli.main([*RUN, *args, f"hydra.run.dir={reference_dir}"])
    killed = train_process(
        *args,
        "+callbacks.probe._target_=probes.SignalProbe",
        "+callbacks.probe.name=SIGKILL",
        "+callbacks.probe.step=17",
        f"hydra.run.dir={run_dir}",
        env={**os.environ, "PYTHONPATH": str(ROOT / "tests")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert killed.wait(timeout=300) == -signal.SIGKILL
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 10
    assert max(step for step, _ in read_scalars(run_dir, logger="csv")["train/loss"]) == 14
    # TensorBoard reads event files in name order: the second they were opened, then the pid. A
    # resume within the killed run's first second, from a lower pid, would sort before it.
    time.sleep(1.1)
    train_cli.main([*RUN, *args, f"hydra.run.dir={run_dir}", "ckpt_path=last"])
    assert_same_events(run_dir, reference_dir)  # TensorBoard's reader honours purge_step
    resumed, reference = read_scalars(run_dir, "csv"), read_scalars(reference_dir, "csv")
    for tag in ("train/loss", "val/loss"):  # both CSV versions read as one run, each step once
        assert [s for s, _ in resumed[tag]] == [s for s, _ in reference[tag]], tag
        assert [v for _, v in resumed[tag]] == pytest.approx([v for _, v in reference[tag]])


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_a_checkpoint_and_says_how_to_resume(text, tmp_path, sig, code):
    run_dir = tmp_path / "run"
    process = train_process(
        "trainer.max_steps=300",
        "callbacks.last_checkpoint.every_n_steps=5",
        f"data.path={text}",
        f"hydra.run.dir={run_dir}",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(run_dir / "checkpoints" / "last.ckpt", process)  # training has started
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert f"{sig.name} received: saved" in stderr
    assert "Traceback" not in stderr
    stopped_at = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"]
    assert 5 <= stopped_at < 300
    if sig == signal.SIGTERM:  # the printed command, pasted back, finishes the run
        command = shlex.split(stderr.split("resume with: ")[1].splitlines()[0])
        assert command[:2] == ["python", "train.py"]
        assert command[-2:] == [f"hydra.run.dir={run_dir}", "ckpt_path=last"]
        train_cli.main(command[2:])
        assert json.loads((run_dir / "summary.json").read_text())["steps"] == 300


# Three validations; every_n_steps beyond them: the only checkpoint is the one a signal writes.
SIGNALLED = [
    "trainer.max_steps=30",
    "trainer.val_check_interval=10",
    "callbacks.last_checkpoint.every_n_steps=100",
]


@pytest.mark.parametrize(
    ("name", "during", "step", "saved_at", "code", "optimizer"),
    [
        ("SIGINT", "step", 10, 10, 130, "adamw"),  # saved once the validation after step 10 ended
        ("SIGTERM", "validation", 10, 11, 143, "adamw"),  # saved after the next step
        ("SIGTERM", "step", 30, 30, 143, "adamw"),  # the last step: nothing left to train
        # Between validations, at a logging step: its train/loss is logged before the exit.
        ("SIGTERM", "step", 15, 15, 143, "adamw"),
        ("SIGTERM", "step", 15, 15, 143, "muon"),  # Muon's and AdamW's state, in one optimizer
    ],
)
def test_a_signal_mid_step_or_mid_validation_resumes_exactly(
    text, tmp_path, capsys, name, during, step, saved_at, code, optimizer
):
    # The checkpoint waits for the end of the step and of the validation that follows it: a
    # signal in the middle of either stops the run at a point it resumes from exactly.
    args = [*RUN, *SIGNALLED, f"optim.name={optimizer}", f"data.path={text}"]
    reference_dir = tmp_path / "reference"
    train_cli.main([*args, f"hydra.run.dir={reference_dir}"])
    run_dir = tmp_path / "run"
    probe = [
        "+callbacks.probe._target_=probes.SignalProbe",
        f"+callbacks.probe.name={name}",
        f"+callbacks.probe.step={step}",
        f"+callbacks.probe.during={during}",
    ]
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main([*args, *probe, f"hydra.run.dir={run_dir}"])
    assert exit_info.value.code == code
    last = run_dir / "checkpoints" / "last.ckpt"
    assert f"{name} received: saved {last} at step {saved_at}" in capsys.readouterr().err
    assert not (run_dir / "summary.json").exists()

    train_cli.main([*args, f"hydra.run.dir={run_dir}", "ckpt_path=last"])
    expected = json.loads((reference_dir / "summary.json").read_text())
    got = json.loads((run_dir / "summary.json").read_text())
    for key in ("steps", "best_val_loss", "final_val_loss"):
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
    assert_same_events(run_dir, reference_dir)  # each step once, as uninterrupted


# What SLURM gives a batch job's process, as Lightning's SLURMEnvironment reads it.
SLURM_JOB = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "train",
    "SLURM_NTASKS": "1",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
}


@pytest.mark.slow
def test_slurm_requeue_saves_requeues_and_the_requeued_job_resumes(text, tmp_path, monkeypatch):
    reference_dir = tmp_path / "reference"  # the uninterrupted run
    train_cli.main([*RUN, f"data.path={text}", f"hydra.run.dir={reference_dir}"])
    # A stand-in scontrol that records how it was called.
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol_calls"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    env = {**os.environ, **SLURM_JOB, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    run_dir = tmp_path / "run"  # a job's fixed directory, as docs/reliability.md says
    args = ["callbacks.last_checkpoint.every_n_steps=50", f"data.path={text}"]
    process = train_process(*args, f"hydra.run.dir={run_dir}", env=env, stderr=subprocess.PIPE)
    wait_for(run_dir / "checkpoints" / "last.ckpt", process)  # training has started
    process.send_signal(signal.SIGUSR1)  # SLURM's warning before preempting the job
    wait_for(calls, process)
    hpc = run_dir / "hpc_ckpt_1.ckpt"
    saved_at = load_checkpoint(hpc)["global_step"]  # complete: atomic, before the requeue
    process.send_signal(signal.SIGKILL)  # the end of the job as SLURM requeues it
    process.communicate()
    assert calls.read_text() == "requeue 4242\n"
    last = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"]
    assert last < saved_at < 200

    # SLURM starts the requeued job with the same command: it resumes from the hpc checkpoint.
    for name, value in {**SLURM_JOB, "SLURM_RESTART_COUNT": "1"}.items():
        monkeypatch.setenv(name, value)
    train_cli.main([*RUN, *args, f"hydra.run.dir={run_dir}"])
    log = (run_dir / "train.log").read_text()
    assert f"Restoring states from the checkpoint path at {hpc}" in log
    expected = json.loads((reference_dir / "summary.json").read_text())
    got = json.loads((run_dir / "summary.json").read_text())
    assert got["steps"] == expected["steps"] == 200
    assert abs(got["final_val_loss"] - expected["final_val_loss"]) <= 1e-6


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


def test_resume_on_another_text_is_refused_unless_allowed(short_run, tmp_path, capsys):
    other = tmp_path / "other.txt"
    other.write_text(TINY_TEXT[::-1])  # the same characters, another text
    resume = [
        f"ckpt_path={short_run / 'checkpoints' / 'last.ckpt'}",
        f"data.path={other}",
        "trainer.max_steps=10",
    ]
    error = refused(capsys, *resume, f"hydra.run.dir={tmp_path / 'run'}")
    assert "another text than this run's data" in error
    assert "add resume_data_change=allow" in error
    assert not (tmp_path / "run" / "checkpoints").exists()
    bad = refused(capsys, *resume, "resume_data_change=maybe", f"hydra.run.dir={tmp_path / 'r'}")
    assert "resume_data_change must be refuse or allow, got 'maybe'" in bad

    allowed = tmp_path / "allowed"
    train_cli.main([*RUN, *resume, "resume_data_change=allow", f"hydra.run.dir={allowed}"])
    assert json.loads((allowed / "summary.json").read_text())["steps"] == 10


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_steps=20", "trainer.max_steps=10 (now 20)"),
        ("optim.lr=0.002", "optim.lr=0.001 (now 0.002)"),
        ("optim.betas=[0.9,0.95]", "optim.betas=[0.9, 0.99] (now [0.9, 0.95])"),
    ],
)
def test_resume_with_another_schedule_or_optimizer_is_refused(
    short_run, text, tmp_path, capsys, override, message
):
    # The restored optimizer and cosine schedule would keep the checkpoint's settings.
    args = [
        f"ckpt_path={short_run / 'checkpoints' / 'last.ckpt'}",
        f"data.path={text}",
        "trainer.max_steps=10",
        override,
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    error = refused(capsys, *args)
    assert f"the checkpoint was trained with {message}" in error
    assert "resume with the checkpoint's, or start a new run" in error


class _NoSpaceLeft:
    """A file whose writes fail as on a full disk."""

    def __init__(self, file) -> None:
        self._file = file

    def write(self, data) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()


def fill_the_disk(monkeypatch, name: str, after: int) -> None:
    """Writes of the file ``name`` fail with ENOSPC once ``after`` of them have succeeded
    (the temporary files tinygpt.files writes through are named after their target)."""
    real_fdopen, opened = os.fdopen, []

    def fdopen(fd: int, *args, **kwargs):
        file = real_fdopen(fd, *args, **kwargs)
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(f".{name}."):
            opened.append(name)
            if len(opened) > after:
                return _NoSpaceLeft(file)
        return file

    monkeypatch.setattr(os, "fdopen", fdopen)


@pytest.mark.parametrize(
    ("target", "after"),
    [("checkpoints/last.ckpt", 1), ("summary.json", 0), ("plots/loss.png", 0)],
)
def test_a_full_disk_stops_the_run_with_one_line_and_keeps_the_previous_file(
    text, tmp_path, capsys, monkeypatch, target, after
):
    run_dir = tmp_path / "run"
    path = run_dir / target
    fill_the_disk(monkeypatch, path.name, after)
    args = ["trainer.max_steps=10", "callbacks.last_checkpoint.every_n_steps=5"]
    args += [f"data.path={text}", f"hydra.run.dir={run_dir}"]
    error = refused(capsys, *args, code=1)  # not the user's input: the same command may work
    assert error == f"error: cannot write {path}: No space left on device"
    assert not list(run_dir.rglob("*.tmp"))
    assert not (run_dir / "summary.json").exists()
    if path.suffix == ".ckpt":
        assert load_checkpoint(path)["global_step"] == 5  # the previous checkpoint, whole
    else:
        assert not path.exists()


@pytest.mark.slow
def test_a_file_size_limit_stops_a_resumed_run_and_keeps_its_checkpoints(text, tmp_path):
    # A real write error in a real process: RLIMIT_FSIZE makes writes past the limit fail with
    # EFBIG (SIGXFSZ ignored, as a shell would), like a disk that fills up.
    run_dir = tmp_path / "run"
    args = [*RUN, *SIGNALLED, f"data.path={text}", f"hydra.run.dir={run_dir}"]
    probe = ["+callbacks.probe._target_=probes.SignalProbe", "+callbacks.probe.name=SIGTERM"]
    with pytest.raises(SystemExit):  # stopped at step 15: best.ckpt at 10, last.ckpt at 15
        train_cli.main([*args, *probe, "+callbacks.probe.step=15"])
    checkpoints = file_bytes(run_dir / "checkpoints")
    limit = len(checkpoints["last.ckpt"]) // 2
    limited = (
        "import resource, runpy, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    command = [sys.executable, "-c", limited, str(ROOT / "train.py"), *args, "ckpt_path=last"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]
    best = run_dir / "checkpoints" / "best.ckpt"  # the first save after the resume, at step 20
    assert one_error_line(result.stderr) == f"error: cannot write {best}: File too large"
    assert file_bytes(run_dir / "checkpoints") == checkpoints
    assert not list(run_dir.rglob("*.tmp"))
    assert not (run_dir / "summary.json").exists()
