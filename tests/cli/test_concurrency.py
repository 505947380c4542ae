"""Many runs at once, as a shell loop starts them (``for s in ...; do python train.py seed=$s &
done``), and a real full disk: every run gets a directory of its own and writes only there, runs
on a new text share one token cache, and a full disk leaves the last checkpoint intact."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
from pathlib import Path

import pytest
import torch
import yaml
from helpers import ROOT, TESTS, TINY_RUN, TINY_TEXT, compose_task, one_error_line, save_checkpoint
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import metadata

from tinygpt.checkpoint import load_checkpoint
from tinygpt.cli import generate as generate_cli
from tinygpt.cli import train as train_cli
from tinygpt.data import token_cache as tc

sys.path.insert(0, str(TESTS / "analysis"))
from test_tensorboard_server import experiment, session_groups, tensorboard  # noqa: E402

N = 8
PROMPT = "First"


def start(script: str, *args: str, root: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{TESTS}", "TINYGPT_ROOT": str(root)}
    return subprocess.Popen(
        [sys.executable, str(ROOT / script), *args],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def events_by_pid(run_dir: Path) -> dict[str, int]:
    """The run's TensorBoard event files, counted by the pid in their names, and its sessions."""
    pids: dict[str, int] = {}
    for path in run_dir.glob("**/events.out.tfevents.*"):
        pid = path.name.split(".")[-2]
        pids[pid] = pids.get(pid, 0) + 1
    return pids


def sessions(run_dir: Path) -> int:
    return sum(
        value.tag == metadata.SESSION_START_INFO_TAG
        for path in run_dir.glob("**/events.out.tfevents.*")
        for event in EventFileLoader(str(path)).Load()
        for value in event.summary.value
    )


@pytest.mark.slow
def test_eight_train_py_and_eight_generate_py_at_once_each_write_their_own(python, tmp_path):
    root = tmp_path / "root"
    texts = root / "texts"
    texts.mkdir(parents=True)
    text = texts / "new.txt"  # a text never tokenized: every train.py finds no cache
    text.write_text(TINY_TEXT)
    ckpt = save_checkpoint(tmp_path / "model.ckpt")
    train = [*TINY_RUN, "trainer.max_steps=4", "trainer.val_check_interval=2", f"data.path={text}"]
    runs = [start("train.py", *train, f"seed={s}", root=root) for s in range(1, N + 1)]
    generate = [f"ckpt_path={ckpt}", "max_new_tokens=40", f"prompt={PROMPT}"]
    runs += [start("generate.py", *generate, f"seed={s}", root=root) for s in range(1, N + 1)]
    for run in runs:
        _, stderr = run.communicate(timeout=600)
        assert run.returncode == 0, stderr[-3000:]

    train_dirs = sorted((root / "outputs" / "runs").iterdir())
    generate_dirs = sorted((root / "outputs" / "generate").iterdir())
    assert len(train_dirs) == N and len(generate_dirs) == N
    seeds = []
    for run_dir in train_dirs:
        seeds.append(yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["seed"])
        assert json.loads((run_dir / "summary.json").read_text())["steps"] == 4
        assert len(events_by_pid(run_dir)) == 1 and sessions(run_dir) == 1  # one process's
    assert sorted(seeds) == list(range(1, N + 1))
    # One token cache, beside the text, complete; every run trained on its fingerprint.
    (cache,) = texts.glob("*.tokens")
    fingerprint = tc.sha256_of(text)
    assert tc.read_cache(cache, fingerprint).path == cache
    assert not list((root / "data").glob("tokens/*"))
    for run_dir in train_dirs:
        entry = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["tinygpt"]
        assert entry["data_fingerprint"] == fingerprint

    # Each samples file holds its own seed's text: as this process generates it for the seed.
    for run_dir in generate_dirs:
        record = json.loads((run_dir / "samples.json").read_text())
        seed = record["config"]["seed"]
        cfg = compose_task("generate", [*generate, f"seed={seed}"], tmp_path / f"ref-{seed}")
        generate_cli.generate(cfg)
        reference = json.loads((tmp_path / f"ref-{seed}" / "samples.json").read_text())
        assert record["samples"] == reference["samples"]
        assert (run_dir / "samples.txt").read_text() == f"{reference['samples'][0]}\n"
        assert len(events_by_pid(run_dir)) == 1 and sessions(run_dir) == 1
    seeds = sorted(
        json.loads((d / "samples.json").read_text())["config"]["seed"] for d in generate_dirs
    )
    assert seeds == list(range(1, N + 1))

    # A real TensorBoard server lists one HParams row per run.
    log = tmp_path / "tensorboard.log"
    with tensorboard(python, root / "outputs", log) as (base, process):
        deadline, kinds = time.monotonic() + 120, []
        while len(kinds) < 2 * N and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            time.sleep(1)
            try:
                exp = experiment(base)
                groups = session_groups(base, exp) if exp.get("hparamInfos") else []
            except (urllib.error.URLError, ConnectionError, ValueError, KeyError):
                continue  # not listening yet, or still loading
            kinds = sorted(g["hparams"]["kind"] for g in groups for _ in g["sessions"])
    assert kinds == ["generate"] * N + ["train"] * N, log.read_text()


@pytest.fixture
def small_disk():
    """A tmpfs of 8 MB (for a run directory), or skip where the machine refuses to mount one."""
    where = Path(tempfile.mkdtemp(prefix="tinygpt-disk-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        shutil.rmtree(where, ignore_errors=True)
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        # --lazy: this process may still hold a file of the in-process resume open there
        subprocess.run(["umount", "--lazy", str(where)], capture_output=True)
        shutil.rmtree(where, ignore_errors=True)


@pytest.mark.slow
def test_a_disk_filled_during_training_keeps_the_last_checkpoint_and_the_run_resumes(
    small_disk, tiny_text_file, tmp_path
):
    run_dir, filler = small_disk / "run", small_disk / "filler"
    job = [
        *TINY_RUN,
        "trainer.max_steps=20",
        "callbacks.last_checkpoint.every_n_steps=5",
        "callbacks.metric_plots=null",
        f"data.path={tiny_text_file}",
    ]
    probe = f"+callbacks.fill={{_target_:probes.FillDiskProbe,step:7,path:{filler}}}"
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *job, probe, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{TESTS}"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    line = one_error_line(done.stderr)
    assert line.startswith(f"error: cannot write {run_dir}/") and "No space left on device" in line
    last = run_dir / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["global_step"] == 5  # the previous one, intact
    assert not list(run_dir.glob("**/.*.tmp"))  # nor a part of the failed one
    filler.unlink()
    train_cli.main([*job, f"hydra.run.dir={run_dir}", "ckpt_path=last"])
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 20
    assert torch.load(last, weights_only=True, map_location="cpu")["global_step"] == 20
