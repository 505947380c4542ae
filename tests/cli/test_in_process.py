"""tinygpt.train: python train.py in this process, from any directory and many times; a bad
override is an exception with train.py's line; an interrupt saves last.ckpt and the run resumes."""

import json
import signal
import threading

import pytest
from helpers import TINY_RUN, one_error_line, run_train

import tinygpt
from tinygpt.checkpoint import load_checkpoint
from tinygpt.errors import TinyGPTError


@pytest.fixture
def root(tmp_path, monkeypatch):
    """TINYGPT_ROOT in a fresh directory, which is also the working directory."""
    monkeypatch.setenv("TINYGPT_ROOT", str(tmp_path / "root"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "root"


def test_dense_then_moe_in_one_process_write_runs_that_generate(root, tiny_text_file):
    runs = []
    for kind in ("dense", "moe"):
        runs.append(tinygpt.train([*TINY_RUN, f"data.path={tiny_text_file}", f"model={kind}"]))
    for run in runs:
        assert run.dir.parent == root / "outputs" / "runs"
        assert run.summary == json.loads((run.dir / "summary.json").read_text())
        assert run.summary["steps"] == 20
        assert (run.dir / ".hydra" / "overrides.yaml").is_file()
        assert list(run.dir.glob("tb/events*"))
        assert len(run.scalars()["val/loss"]) == 2  # a validation every 10 steps
        text = tinygpt.generate(run.load_model(), "First", 20, seed=1)
        assert text.startswith("First") and len(text) == 25
    assert runs[0].dir != runs[1].dir
    assert runs[1].summary["parameters"] > runs[0].summary["parameters"]  # 4 experts


def test_a_bad_override_raises_the_line_train_py_prints(root, tiny_text_file):
    with pytest.raises(TinyGPTError) as raised:
        tinygpt.train(["model.n_layr=3"])
    printed = one_error_line(run_train("model.n_layr=3").stderr)
    assert f"error: {raised.value}" == printed and "model.n_layr" in printed
    with pytest.raises(TinyGPTError, match="model.n_head"):
        tinygpt.train([f"data.path={tiny_text_file}", "model.n_head=3"])  # raised by the job
    with pytest.raises(TinyGPTError, match="a list of strings"):
        tinygpt.train("model=moe")


@pytest.fixture
def kernel_sigint():
    """A kernel's Ctrl-C handler, also where pytest started with SIGINT ignored (as a shell's
    background job: Python then installs none)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_an_interrupt_saves_last_ckpt_and_the_run_resumes(root, tiny_text_file, kernel_sigint):
    settings = [*TINY_RUN, f"data.path={tiny_text_file}"]
    interrupt = ["+callbacks.probe._target_=probes.SignalProbe", "+callbacks.probe.name=SIGINT"]
    with pytest.raises(KeyboardInterrupt, match="ckpt_path=last") as raised:
        tinygpt.train([*settings, *interrupt, "+callbacks.probe.step=13"])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the kernel's, back
    (run_dir,) = (root / "outputs" / "runs").iterdir()
    assert str(run_dir) in str(raised.value)
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 13
    resumed = tinygpt.train([*settings, f"hydra.run.dir={run_dir}", "ckpt_path=last"])
    assert resumed.dir == run_dir and resumed.summary["steps"] == 20


def test_training_runs_on_a_thread_other_than_the_main_one(root, tiny_text_file):
    runs = []
    worker = threading.Thread(
        target=lambda: runs.append(tinygpt.train([*TINY_RUN, f"data.path={tiny_text_file}"]))
    )
    worker.start()
    worker.join()
    assert runs and runs[0].summary["steps"] == 20
