"""Where runs read and write (conf/paths/), from any working directory, and what train.py prints
pasted back into both scripts as it is."""

import json
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import ROOT, TINY_RUN, job_name, script, wait_for
from hydra import compose, initialize_config_dir

from tinygpt.checkpoint import load_checkpoint
from tinygpt.cli.paths import ROOT_ENV
from tinygpt.cli.resolvers import register_resolvers, register_schemas


def composed(config: str, overrides: list[str] = ()):
    register_resolvers()
    register_schemas()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config, overrides=list(overrides), return_hydra_config=True)


def assert_everything_under(root: Path) -> None:
    train = composed("train")
    assert train.paths.root_dir == str(root)
    assert train.data.cache_dir == str(root / "data")
    assert Path(train.hydra.run.dir).parent == root / "outputs" / "runs"
    assert Path(train.hydra.sweep.dir).parent == root / "outputs" / "multirun"
    generate = composed("generate")
    assert generate.checkpoints_dir == str(root / "outputs")
    assert Path(generate.hydra.run.dir).parent == root / "outputs" / "generate"
    assert Path(generate.hydra.sweep.dir).parent == root / "outputs" / "generate-multirun"


def test_paths_default_to_the_project_root(monkeypatch):
    monkeypatch.delenv(ROOT_ENV, raising=False)
    assert_everything_under(ROOT)  # data/ is where .ci/run seeds TinyShakespeare


def test_tinygpt_root_moves_every_path(monkeypatch, tmp_path):
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "elsewhere"))
    assert_everything_under(tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ROOT_ENV, "relative")  # taken from the working directory, made absolute
    assert_everything_under(tmp_path / "relative")


def test_each_path_and_the_old_overrides_can_still_be_set(monkeypatch):
    monkeypatch.delenv(ROOT_ENV, raising=False)
    moved = composed("train", ["paths.data_dir=/scratch/data", "paths.log_dir=/scratch/runs"])
    assert moved.data.cache_dir == "/scratch/data"
    assert Path(moved.hydra.run.dir).parent == Path("/scratch/runs/runs")
    explicit = composed("train", ["data.cache_dir=/c", "hydra.run.dir=/r", "hydra.sweep.dir=/s"])
    assert (explicit.data.cache_dir, explicit.hydra.run.dir) == ("/c", "/r")
    assert explicit.hydra.sweep.dir == "/s"
    generate = composed("generate", ["checkpoints_dir=/ckpts"])
    assert generate.checkpoints_dir == "/ckpts"


@pytest.mark.slow
def test_train_and_generate_from_another_directory(shakespeare_cache, tmp_path):
    # python /path/to/train.py from anywhere: the data cache, the runs and generate.py's
    # checkpoint search all follow TINYGPT_ROOT (the project root when unset), not the cwd.
    root, cwd = tmp_path / "root", tmp_path / "cwd"
    (root / "data").mkdir(parents=True)
    shutil.copy(shakespeare_cache / "tinyshakespeare.txt", root / "data")
    cwd.mkdir()

    def run(name: str, *args: str) -> subprocess.CompletedProcess:
        return script(name, *args, cwd=cwd, env={ROOT_ENV: str(root)})

    trained = run("train.py", *TINY_RUN)
    assert trained.returncode == 0, trained.stderr[-3000:]
    (run_dir,) = (root / "outputs" / "runs").iterdir()
    best = run_dir / "checkpoints" / "best.ckpt"
    checkpoint = load_checkpoint(best)
    assert checkpoint["tinygpt"]["config"]["data"]["cache_dir"] == str(root / "data")
    # The text and its token cache (tinygpt.data.token_cache), nothing in the cwd.
    assert sorted(p.name for p in (root / "data").iterdir()) == [
        "tinyshakespeare.txt",
        "tinyshakespeare.txt.tokens",
    ]
    assert list(cwd.iterdir()) == []

    generated = run("generate.py", "decoder=greedy", "max_new_tokens=5")  # no ckpt_path
    assert generated.returncode == 0, generated.stderr[-3000:]
    # The newest run's best.ckpt, named with the step and val loss Lightning stored in it.
    best_val_loss = json.loads((run_dir / "summary.json").read_text())["best_val_loss"]
    assert (
        f"using the newest run's best.ckpt (step {checkpoint['global_step']}, "
        f"val loss {best_val_loss:.4f}): {best}"
    ) in generated.stderr
    (generate_dir,) = (root / "outputs" / "generate").iterdir()
    assert json.loads((generate_dir / "samples.json").read_text())["ckpt_path"] == str(best)
    assert list(cwd.iterdir()) == []  # nothing written where the scripts were started


@pytest.mark.slow
def test_what_a_sweep_prints_pastes_back_unquoted(python, tiny_text_file, tmp_path):
    # The sweep over experts, stopped with SIGTERM in its first job: the checkpoint path
    # and the resume command it prints go back, unquoted, into generate.py and train.py.
    sweep = tmp_path / "sweep"
    shared = [*TINY_RUN, "trainer.max_steps=60", "callbacks.last_checkpoint.every_n_steps=2"]
    job = sweep / f"0_{job_name('train', [*shared, 'model=moe', 'model.num_experts=2'])}"
    process = subprocess.Popen(
        [
            python,
            str(ROOT / "train.py"),
            "-m",
            *shared,
            "model=moe",
            "model.num_experts=2,3",
            f"data.path={tiny_text_file}",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The first job is training: its first last.ckpt is written after the stop-signal handlers
    # are installed. (Its TensorBoard file is not proof: Lightning creates it before setup.)
    wait_for(job / "checkpoints" / "last.ckpt", process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    printed = re.search(r"SIGTERM received: saved (\S+) at step (\d+); resume with: (.*)", stderr)
    assert printed, stderr[-3000:]
    ckpt_path, step, command = printed.group(1), int(printed.group(2)), printed.group(3)
    assert ckpt_path == str(job / "checkpoints" / "last.ckpt") and step < 60
    assert shlex.split(command) == command.split()  # nothing in it is quoted
    assert command.startswith("python train.py ")
    assert command.endswith(f" hydra.run.dir={job} ckpt_path=last")

    # The resume command, pasted (with this interpreter as `python`), finishes the job.
    resumed = subprocess.run(
        [python, *command.split()[1:]], cwd=ROOT, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((job / "summary.json").read_text())
    assert summary["steps"] == 60
    assert (
        load_checkpoint(job / "checkpoints" / "last.ckpt")["tinygpt"]["model_config"]["num_experts"]
        == 2
    )

    # The printed checkpoint path into a generate.py sweep: one path, not a sweep over pieces.
    generate_sweep = tmp_path / "generate"
    generated = subprocess.run(
        [
            python,
            str(ROOT / "generate.py"),
            "-m",
            f"ckpt_path={ckpt_path}",
            "decoder=temperature",
            "decoder.temperature=0.5,1.0",
            "max_new_tokens=5",
            f"hydra.sweep.dir={generate_sweep}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert generated.returncode == 0, generated.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted(generate_sweep.glob("*/samples.json"))]
    assert [r["decoder"]["temperature"] for r in records] == [0.5, 1.0]
    assert {r["ckpt_path"] for r in records} == {ckpt_path}
