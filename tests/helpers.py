"""What the tests share: tiny texts, runs and checkpoints, composed configs, the scripts run as
a user runs them, and the checks several tests make. Fixtures are in conftest.py."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict, read_write
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import metadata

from tinygpt.checkpoint import checkpoint_entry
from tinygpt.cli.resolvers import register_resolvers, register_schemas, safe_name
from tinygpt.cli.train import train
from tinygpt.data import CharDataModule, CharTokenizer
from tinygpt.models import TinyGPT, TinyGPTConfig
from tinygpt.training import OptimConfig, TinyGPTModule

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
CONF = ROOT / "conf"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# The sweeps extra (pyproject.toml): Hydra's joblib and submitit launchers, its Optuna sweeper.
SWEEP_PLUGINS = ("hydra_joblib_launcher", "hydra_submitit_launcher", "hydra_optuna_sweeper")
needs_sweeps = pytest.mark.skipif(
    not all(importlib.util.find_spec(f"hydra_plugins.{name}") for name in SWEEP_PLUGINS),
    reason='needs the sweeps extra: pip install -e ".[sweeps]"',
)
CHARS = "\n !',-.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# A few lines repeated: enough characters for short end-to-end runs, learnable in a few steps.
TINY_TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n\n"
) * 40

# A training run of a few seconds: 20 steps of a small context, no attention pictures (a test
# that checks them switches them on).
TINY_RUN = [
    "trainer=cpu",
    "trainer.max_steps=20",
    "trainer.val_check_interval=10",
    "trainer.log_every_n_steps=5",
    "model.block_size=16",
    "data.batch_size=8",
    "callbacks.attention_heatmap=null",
]


class CreatesFile:
    """A pickle payload that would create a file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def compose_task(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """A script's config as its ``@hydra.main`` function receives it, running in ``output_dir``.

    The command-line overrides go through Hydra's own parser; HydraConfig answers as in a run.
    """
    register_resolvers()
    register_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    with read_write(cfg), open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]  # as in a task function: the hydra node lives in HydraConfig
    return cfg


def job_name(config: str, overrides: list[str]) -> str:
    """A sweep job's directory name as Hydra makes it (``hydra.sweep.subdir``), job number aside:
    the job's overrides, as ``hydra.job.override_dirname`` joins them, made a safe name."""
    last = {o.partition("=")[0]: o for o in overrides}  # as Hydra's sweeper: a key's last value
    register_resolvers()
    register_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config, overrides=list(last.values()), return_hydra_config=True)
    return safe_name(cfg.hydra.job.override_dirname)


def spread_model(**overrides) -> TinyGPT:
    """A small model in eval mode (vocabulary 20, context 8, 32 dims), its weights scaled up to
    spread the logits: a wrong cached step cannot hide in rounding, nor rounding choose a token.
    The compiled-step tests share its shape, hence one C++ build."""
    torch.manual_seed(0)
    model = TinyGPT(TinyGPTConfig(vocab_size=20, block_size=8, n_embd=32, **overrides)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(4)
    return model


def save_checkpoint(path: Path, run_config: dict | None = None, **shape: int) -> Path:
    """An untrained one-layer model saved as a training checkpoint is, with ``run_config``."""
    torch.manual_seed(0)
    tokenizer = CharTokenizer(CHARS)
    config = TinyGPTConfig(
        **{
            "vocab_size": tokenizer.vocab_size,
            "block_size": 16,
            "n_layer": 1,
            "n_embd": 16,
            **shape,
        }
    )
    state = {"model." + k: v for k, v in TinyGPT(config).state_dict().items()}
    entry = checkpoint_entry(config, tokenizer, run_config or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "tinygpt": entry}, path)
    return path


def script(name: str, *args: str, cwd: Path = ROOT, env: dict | None = None, **kwargs):
    """``python NAME ARGS`` (train.py or generate.py of this checkout) as a user runs it; the
    tests' probes (tests/probes.py) are importable in it and in the DDP ranks it starts."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]), **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / name), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,
    )


def run_train(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return script("train.py", *args, **kwargs)


def run_generate(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return script("generate.py", *args, **kwargs)


def one_error_line(stderr: str) -> str:
    """The ``error:`` line of a refused command, checking that it is the only one and that no
    traceback was printed."""
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


def wait_for(path_glob: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until a file matching ``path_glob`` exists while ``process`` runs."""
    deadline = time.monotonic() + timeout
    while not list(path_glob.parent.glob(path_glob.name)):
        assert process.poll() is None, "training ended before the awaited file appeared"
        assert time.monotonic() < deadline, f"{path_glob} never appeared"
        time.sleep(0.02)


# In-process training with the clipping probe, for the precision and trainer-option tests.
PROBED_RUN = [
    "trainer.max_steps=30",
    "trainer.val_check_interval=30",
    "trainer.log_every_n_steps=5",
    "trainer.gradient_clip_val=0.5",  # low enough to bite on the first steps
    "model.block_size=16",
    "data.batch_size=8",
    "optim.warmup_steps=5",
    "callbacks.metric_plots=null",
    "+callbacks.probe._target_=probes.ClippingProbe",
]


def train_in_process(
    run_dir: Path, text_file: Path, *overrides: str, heatmaps: bool = False
) -> tuple[dict, dict]:
    """Compose train.yaml as train.py does and train; the run's summary and probe report."""
    run_dir.mkdir(parents=True, exist_ok=True)
    quiet = [] if heatmaps else ["callbacks.attention_heatmap=null"]
    cfg = compose_task(
        "train",
        [*PROBED_RUN, *quiet, f"+callbacks.probe.out_dir={run_dir}", f"data.path={text_file}"]
        + list(overrides),
        run_dir,
    )
    train(cfg)
    summary = json.loads((run_dir / "summary.json").read_text())
    return summary, json.loads((run_dir / "probe.json").read_text())


def vocab_loss(text_file: Path) -> float:
    """The loss of a uniform guess, ln(vocabulary size): where training starts from."""
    return math.log(len(set(text_file.read_text())))


def assert_clipped(probe: dict) -> None:
    """Clipping bit on some step, and every step's gradients are exactly the clipped ones."""
    steps, clip = probe["steps"], probe["clip"]
    assert any(s["norm_before"] > 1.5 * clip for s in steps), steps[:3]
    assert all(s["norm_after"] <= clip * (1 + 1e-4) for s in steps)
    assert max(s["deviation_from_clipped"] for s in steps) < 1e-6
    # True gradients, not times a loss scale (2**16 at the start under a GradScaler).
    assert max(s["norm_before"] for s in steps) < 100


def make_module(path: Path, block_size: int = 16) -> tuple[CharDataModule, TinyGPTModule]:
    """A DataModule over the text at ``path`` and a notebook-size module for it, for a Trainer."""
    datamodule = CharDataModule(path=str(path), block_size=block_size, batch_size=8)
    datamodule.setup()
    module = TinyGPTModule(
        TinyGPTConfig(vocab_size=datamodule.tokenizer.vocab_size, block_size=block_size),
        datamodule.tokenizer,
        OptimConfig(warmup_steps=1),
        run_config={"model": {"n_layer": 2}, "seed": 7},
    )
    return datamodule, module


def read_session(log_dir: Path):
    """(hparams plugin's SessionStartInfo, tags) from a run's TensorBoard directory."""
    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    content = events.SummaryMetadata(metadata.SESSION_START_INFO_TAG).plugin_data.content
    return metadata.parse_session_start_info_plugin_data(content), events.Tags()


def session_count(run_dir: Path) -> int:
    """How many HParams sessions the run's TensorBoard directory holds, read raw."""
    return sum(
        value.tag == metadata.SESSION_START_INFO_TAG
        for path in (run_dir / "tb").glob("events.out.tfevents.*")
        for event in EventFileLoader(str(path)).Load()
        for value in event.summary.value
    )


def scalar_events(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the run's TensorBoard events (``<run>/tb``) as TensorBoard's reader holds
    them, in the order written: a step logged twice, and not purged, shows twice."""
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return {t: [(e.step, e.value) for e in events.Scalars(t)] for t in events.Tags()["scalars"]}


# Scalars that two runs of the same config log alike (not speed, not wall time).
DETERMINISTIC_TAGS = ("train/loss", "val/loss", "val/ppl", "train/grad_norm", "train/lr/decay")


def assert_same_events(run_dir: Path, reference_dir: Path) -> None:
    """The run's TensorBoard scalars log each step once, as the reference run logged them."""
    got, expected = scalar_events(run_dir), scalar_events(reference_dir)
    for tag in DETERMINISTIC_TAGS:
        assert expected.get(tag), f"the reference run logged no {tag}"
        steps = [step for step, _ in got.get(tag, [])]
        assert len(steps) == len(set(steps)), f"{tag}: a step logged twice: {steps}"
        assert sorted(steps) == [step for step, _ in expected.get(tag, [])], tag
        values = dict(got.get(tag, []))
        for step, value in expected.get(tag, []):
            assert values[step] == pytest.approx(value, abs=1e-6), (tag, step)


def file_bytes(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (relative path -> content), to compare before and after."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }
