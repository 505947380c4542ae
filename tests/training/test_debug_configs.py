"""The debug config group (fdr, limit, overfit, profiler), and the Trainer's debugging switches
set without ``+``: each option runs a tiny model in-process, fewer steps than its own where its
own would take long, and is checked for what it promises."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from helpers import CONF, compose_task
from hydra.core.hydra_config import HydraConfig

from tinygpt.cli.train import train
from tinygpt.data.windows import RandomWindows

# A model of one small layer, without the pictures and samples that validation draws.
TINY_MODEL = [
    "model.n_layer=1",
    "model.n_embd=32",
    "model.block_size=16",
    "data.batch_size=8",
    "data.val_batch_size=8",  # validation in several batches, for limit_val_batches to limit
    "callbacks.attention_heatmap=null",
    "callbacks.sample_text=null",
    "callbacks.metric_plots=null",
]
OPTIONS = {p.stem for p in (CONF / "debug").glob("*.yaml")} - {"default"}


def run_debug(option: str, text_file: Path, run_dir: Path, *overrides: str) -> dict:
    """Train with ``debug=option``; the run's summary and what BatchProbe recorded."""
    cfg = compose_task(
        "train",
        [
            f"debug={option}",
            *TINY_MODEL,
            f"data.path={text_file}",
            "+callbacks.batches._target_=probes.BatchProbe",
            f"+callbacks.batches.out_dir={run_dir}",
            *overrides,
        ],
        run_dir,
    )
    train(cfg)
    summary = json.loads((run_dir / "summary.json").read_text())
    return {**summary, **json.loads((run_dir / "batches.json").read_text())}


def test_every_debug_option_is_tested_here():
    tested = {name.removeprefix("test_debug_") for name in globals() if name.startswith("test_")}
    assert OPTIONS == {"fdr", "limit", "overfit", "profiler"}
    assert OPTIONS <= tested


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_debug_options_share_the_debug_defaults(option, tmp_path):
    cfg = compose_task("train", [f"debug={option}"], tmp_path)
    assert (cfg.trainer.accelerator, cfg.trainer.devices) == ("cpu", 1)
    assert cfg.trainer.detect_anomaly is True
    assert cfg.trainer.enable_checkpointing is False
    assert cfg.callbacks.best_checkpoint is None and cfg.callbacks.last_checkpoint is None
    assert "/debug/runs/" in HydraConfig.get().run.dir
    assert "/debug/multirun/" in HydraConfig.get().sweep.dir


def test_debug_fdr(tiny_text_file, tmp_path):
    record = run_debug("fdr", tiny_text_file, tmp_path)
    assert record["steps"] == 1
    assert [len(epoch) for epoch in record["epochs"]] == [1]
    assert record["validations"] == [1]
    assert record["final_val_loss"] is not None
    # Lightning's fast_dev_run: no logger writes, and no checkpoint anywhere.
    assert not (tmp_path / "tb").exists()
    assert not list(tmp_path.rglob("*.ckpt"))


def test_debug_limit(tiny_text_file, tmp_path):
    cfg = compose_task("train", ["debug=limit"], tmp_path)
    assert (cfg.trainer.limit_train_batches, cfg.trainer.limit_val_batches) == (10, 2)
    # The option's shape, at a fifth of its length: epochs of 2 batches, 2 validation batches.
    record = run_debug(
        "limit",
        tiny_text_file,
        tmp_path,
        "trainer.max_steps=6",
        "trainer.limit_train_batches=2",
        "trainer.val_check_interval=2",
    )
    assert record["steps"] == 6
    assert [len(epoch) for epoch in record["epochs"]] == [2, 2, 2]
    # Epochs end the stream's iteration, not its sequence: no batch is drawn twice.
    batches = [digest for epoch in record["epochs"] for digest in epoch]
    assert len(set(batches)) == 6
    assert record["validations"] == [2, 2, 2]  # of the 5 batches the validation split holds
    assert not list(tmp_path.rglob("*.ckpt"))


def test_debug_overfit(tiny_text_file, tmp_path):
    cfg = compose_task("train", ["debug=overfit"], tmp_path)
    assert cfg.trainer.overfit_batches == 3
    record = run_debug(
        "overfit",
        tiny_text_file,
        tmp_path,
        "trainer.max_steps=30",
        "trainer.val_check_interval=30",
        "optim.warmup_steps=1",
    )
    assert record["steps"] == 30
    epochs = record["epochs"]
    assert len(epochs) == 10 and all(epoch == epochs[0] for epoch in epochs)
    assert len(set(epochs[0])) == 3  # three different batches, again and again
    assert record["validations"] == [3]


def test_debug_profiler(tiny_text_file, tmp_path):
    record = run_debug(
        "profiler",
        tiny_text_file,
        tmp_path,
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
    )
    assert record["validations"] == [2, 2]
    report = (tmp_path / "fit-profile.txt").read_text()
    assert "FIT Profiler Report" in report
    assert "run_training_batch" in report


def test_stream_epochs_continue_unless_repeated():
    data = np.arange(100, dtype=np.uint16)
    stream = RandomWindows(data, block_size=4, batch_size=2, seed=1, rank=0, start=0)
    first = [x.tolist() for x, _ in islice(stream, 3)]
    second = [x.tolist() for x, _ in islice(stream, 3)]
    assert second == [stream.batch(i)[0].tolist() for i in (3, 4, 5)]
    assert first != second
    repeated = RandomWindows(data, 4, 2, seed=1, rank=0, start=0, repeat=True)
    for _ in range(2):
        assert [x.tolist() for x, _ in islice(repeated, 3)] == first


def test_good_switches_pass_through(tiny_text_file, tmp_path):
    record = run_debug(
        "fdr",
        tiny_text_file,
        tmp_path,
        "trainer.limit_val_batches=0.25",
        "trainer.profiler=simple",
        "trainer.accumulate_grad_batches=2",
        "trainer.limit_train_batches=1.0",
    )
    assert record["steps"] == 1
