"""A run directory's state: finished runs left alone, one train.py at a time, and a killed sweep
rerun with ``ckpt_path=last`` (finished jobs kept byte for byte, interrupted ones resumed
exactly, the others run). Killed processes are real train.py processes and real signals; the
reruns that need no process of their own run train.py's command in this process."""

import json
import os
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
    assert_same_events,
    file_bytes,
    job_name,
    needs_sweeps,
    one_error_line,
    run_train,
    scalar_events,
    session_count,
)

from tinygpt.checkpoint import load_checkpoint
from tinygpt.cli import generate as generate_cli
from tinygpt.cli import train as train_cli
from tinygpt.cli.paths import new_run_dir, resolve_ckpt_path
from tinygpt.errors import CheckpointError, WriteError

# Small jobs, validated every ten steps and checkpointed every five, with dropout (a resume must
# replay its noise), no attention pictures or PNG plots.
JOB = [
    "trainer=cpu",
    "trainer.val_check_interval=10",
    "trainer.log_every_n_steps=5",
    "callbacks.last_checkpoint.every_n_steps=5",
    "model.block_size=16",
    "model.dropout=0.1",
    "data.batch_size=8",
    "callbacks.attention_heatmap=null",
    "callbacks.metric_plots=null",
]


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text(TINY_TEXT)
    return path


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_runs_started_in_the_same_second_get_a_directory_each_named_by_the_time(tmp_path):
    claimed = [new_run_dir(str(tmp_path / "runs")) for _ in range(3)]
    stamp = Path(claimed[0]).name
    assert time.strptime(stamp, "%Y-%m-%d_%H-%M-%S")
    assert claimed == sorted(claimed)  # unless the second turned between two claims:
    assert [Path(c).name for c in claimed] in (
        [stamp, f"{stamp}_2", f"{stamp}_3"],
        [stamp, f"{stamp}_2", Path(claimed[2]).name],
        [stamp, Path(claimed[1]).name, Path(claimed[2]).name],
    )
    assert all(Path(c).is_dir() for c in claimed) and len(set(claimed)) == 3


def test_a_run_directory_that_cannot_be_made_is_one_write_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(WriteError, match=f"^cannot write {tmp_path / 'file'}/runs: Not a dir"):
        new_run_dir(str(tmp_path / "file" / "runs"))


def test_ckpt_path_last_is_this_run_directorys_last_checkpoint(tmp_path):
    assert resolve_ckpt_path(None, tmp_path) is None
    assert resolve_ckpt_path("other/x.ckpt", tmp_path) == "other/x.ckpt"
    with pytest.raises(CheckpointError, match="ckpt_path=last: no checkpoint at .*add hydra.run"):
        resolve_ckpt_path("last", tmp_path)
    assert resolve_ckpt_path("last", tmp_path, in_sweep=True) is None  # a job never started
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"")
    assert resolve_ckpt_path("last", tmp_path) == str(last)
    assert resolve_ckpt_path("last", tmp_path, in_sweep=True) == str(last)


def test_a_requeued_slurm_job_resumes_from_its_newest_checkpoint(tmp_path):
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"")
    assert resolve_ckpt_path(None, tmp_path) is None  # not requeued: a fresh run
    assert resolve_ckpt_path(None, tmp_path, requeued=True) == str(last)
    hpc = tmp_path / "hpc_ckpt_1.ckpt"  # Lightning's, saved on SLURM's requeue signal
    hpc.write_bytes(b"")
    os.utime(last, (1, 1))
    assert resolve_ckpt_path(None, tmp_path, requeued=True) == str(hpc)
    assert resolve_ckpt_path("x.ckpt", tmp_path, requeued=True) == "x.ckpt"


def test_a_finished_run_is_left_as_it_is(text, tmp_path, capsys):
    run = [*JOB, "trainer.max_steps=10", f"data.path={text}", f"hydra.run.dir={tmp_path}"]
    train_cli.main(run)
    before = file_bytes(tmp_path)
    capsys.readouterr()
    train_cli.main([*run, "ckpt_path=last"])
    assert f"{tmp_path}: finished (10 steps); left as it is" in capsys.readouterr().out
    assert file_bytes(tmp_path) == before  # its config, log, events and checkpoints


@pytest.mark.slow
def test_a_second_train_py_in_a_live_run_directory_is_refused(text, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run = [*JOB, "trainer.max_steps=100000", f"data.path={text}", f"hydra.run.dir={run_dir}"]
    live = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *run],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: (run_dir / "checkpoints" / "last.ckpt").exists(), live)
        config = file_bytes(run_dir / ".hydra")
        with pytest.raises(SystemExit) as exit_info:
            train_cli.main([*run, "ckpt_path=last"])
        assert exit_info.value.code == 2
        error = one_error_line(capsys.readouterr().err)
        assert error.startswith(f"error: {run_dir} is in use by another process (pid {live.pid}: ")
        assert file_bytes(run_dir / ".hydra") == config  # the live run's config, untouched
        # generate.py into the live directory: refused too, before it writes its samples.
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        with pytest.raises(SystemExit) as exit_info:
            generate_cli.main([f"ckpt_path={ckpt}", "max_new_tokens=2", f"hydra.run.dir={run_dir}"])
        assert "is in use by another process" in one_error_line(capsys.readouterr().err)
        assert file_bytes(run_dir / ".hydra") == config and not (run_dir / "samples.json").exists()
    finally:
        live.kill()
        live.wait()
    # The killed process's lock does not block: a new run in the directory goes ahead.
    train_cli.main([*JOB, "trainer.max_steps=10", f"data.path={text}", f"hydra.run.dir={run_dir}"])
    assert summary(run_dir)["steps"] == 10


def wait_until(condition, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the process ended before the awaited moment"
        assert time.monotonic() < deadline, "the awaited moment never came"
        time.sleep(0.02)


# Three jobs: the second one five times longer, so that it is still running when the first one
# has finished; the third is the first one's twin (same config), to compare it with.
STEPS = (20, 100, 20)


@needs_sweeps  # the parallel launcher: Hydra's joblib plugin
@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "parallel"])
def test_a_killed_sweep_rerun_with_ckpt_path_last_continues(text, tmp_path, launcher):
    sweep = tmp_path / "sweep"
    # The second job holds at step 37 (probes.HangProbe; the others end before it): its last.ckpt
    # is step 35's and everything logged before it is on disk. Killing it at a moment a poll
    # happened to see the checkpoint could land before Lightning logs the saved step's metrics.
    # (The rerun has the same overrides, as it must: they name the job directories.)
    holding = tmp_path / "second-job-holds"
    hold = [
        "+callbacks.probe._target_=probes.HangProbe",
        "+callbacks.probe.step=37",
        f"+callbacks.probe.marker={holding}",
    ]
    FIRST, SECOND, THIRD = (
        f"{n}_{job_name('train', [*JOB, *hold, f'trainer.max_steps={steps}'])}"
        for n, steps in enumerate(STEPS)
    )
    swept = f"trainer.max_steps={','.join(map(str, STEPS))}"
    command = ["-m", *JOB, *hold, swept, f"data.path={text}", f"hydra.sweep.dir={sweep}"]
    if launcher == "parallel":
        command.append("hydra/launcher=parallel")  # two jobs at once, in worker processes
    # The whole sweep is killed at once (launcher and workers): SIGKILL to its process group.
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *command],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "tests")},  # where the probe is
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    first_done = sweep / FIRST / "summary.json"
    second_saved = sweep / SECOND / "checkpoints" / "last.ckpt"
    wait_until(lambda: first_done.exists() and holding.exists(), process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert load_checkpoint(second_saved)["global_step"] == 35
    finished = {
        job.name: file_bytes(job) for job in sweep.glob("*/") if (job / "summary.json").exists()
    }
    assert FIRST in finished and SECOND not in finished

    rerun = run_train(*command, "ckpt_path=last")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming the sweep in {sweep}" in rerun.stdout
    assert f"{sweep / FIRST}: finished (20 steps); left as it is" in rerun.stdout
    for name, files in finished.items():
        assert file_bytes(sweep / name) == files, name  # not retrained, not rewritten
    jobs = sorted(p.parent.name for p in sweep.glob("*/summary.json"))
    assert jobs == [FIRST, SECOND, THIRD]
    for job in jobs:  # one HParams session each: the HParams dashboard shows each job once
        assert session_count(sweep / job) == 1

    # The interrupted job ends as it would have uninterrupted, and logs each step once.
    reference = tmp_path / "reference"
    threads = torch.get_num_threads()
    if launcher == "parallel":  # joblib gives each of its two workers half the cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    try:
        train_cli.main(
            [*JOB, "trainer.max_steps=100", f"data.path={text}", f"hydra.run.dir={reference}"]
        )
    finally:
        torch.set_num_threads(threads)
    for key in ("steps", "best_val_loss", "final_val_loss"):
        assert summary(sweep / SECOND)[key] == pytest.approx(summary(reference)[key], abs=1e-6)
    assert_same_events(sweep / SECOND, reference)
    # The third job (never started, or killed before it saved anything) ran from the start.
    for key in ("steps", "best_val_loss", "final_val_loss"):
        assert summary(sweep / THIRD)[key] == pytest.approx(summary(sweep / FIRST)[key], abs=1e-6)
    assert_same_events(sweep / THIRD, sweep / FIRST)


@needs_sweeps
@pytest.mark.slow
def test_twenty_tiny_jobs_in_two_workers_each_write_their_own_files_once(text, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_train(
        "-m",
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
        "seed=range(20)",
        "trainer=cpu",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.log_every_n_steps=1",
        "model.n_layer=1",
        "model.n_head=1",
        "model.n_embd=8",
        "model.block_size=8",
        "data.batch_size=2",
        "callbacks.attention_heatmap=null",
        "callbacks.sample_text=null",
        "callbacks.metric_plots=null",
        f"data.path={text}",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(
        (p for p in sweep.iterdir() if p.is_dir()), key=lambda p: int(p.name.split("_")[0])
    )
    assert [job.name.split("_")[0] for job in jobs] == [str(n) for n in range(20)]
    assert all(f"+seed-{n}+" in job.name for n, job in enumerate(jobs))
    writers = set()
    for n, job in enumerate(jobs):
        assert summary(job)["steps"] == 2
        assert f"seed={n}" in (job / ".hydra" / "overrides.yaml").read_text()
        # One TensorBoard run each (its events and, at the end, its session), from one process.
        events = list(job.rglob("events.out.tfevents.*"))
        assert {e.parent for e in events} == {job / "tb"} and session_count(job) == 1
        pids = {e.name.split(".")[-2] for e in events}  # ...tfevents.<time>.<host>.<pid>.<n>
        assert len(pids) == 1
        writers |= pids
        assert [step for step, _ in scalar_events(job)["val/loss"]] == [1]  # once, at the end
    assert len(writers) == 2  # the two workers


@needs_sweeps
def test_an_optuna_search_rerun_replays_its_trials(text, tmp_path, capsys):
    sweep = tmp_path / "search"
    search = [
        "-m",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        *JOB,
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "model.n_layer=1",
        f"data.path={text}",
        f"hydra.sweep.dir={sweep}",
        "ckpt_path=last",
    ]
    train_cli.main(search)
    assert f"ckpt_path=last: {sweep} is a new sweep directory" in capsys.readouterr().out
    trials = sorted(p.name for p in sweep.glob("*/summary.json"))
    results = (sweep / "optimization_results.yaml").read_text()
    train_cli.main(search)  # the search again: the study was not stored
    out = capsys.readouterr().out
    assert "the Optuna study is not stored (hydra.sweeper.storage=null)" in out
    assert out.count("; left as it is") == 2  # the same two trials, read back
    assert sorted(p.name for p in sweep.glob("*/summary.json")) == trials
    assert (sweep / "optimization_results.yaml").read_text() == results
