"""DDP with 2 CPU processes (gloo) under Hydra: one run directory, written by rank 0 only."""

import json
import subprocess
from pathlib import Path

import pytest
from helpers import ROOT, assert_clipped, run_train

pytestmark = pytest.mark.slow  # two training processes a test

DDP_RUN = [
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.max_steps=30",
    "trainer.val_check_interval=15",
    "trainer.log_every_n_steps=5",
    "model.block_size=16",
    "data.batch_size=8",
    "callbacks.attention_heatmap=null",  # off unless a test asks for it
]


def run_ddp(*args: str, multirun: bool = False) -> subprocess.CompletedProcess:
    return run_train(*(["-m"] if multirun else []), *DDP_RUN, *args)


def outputs_listing() -> set[str]:
    outputs = ROOT / "outputs"
    return {str(p) for p in outputs.rglob("*")} if outputs.exists() else set()


def assert_written_once(job_dir: Path) -> None:
    names = sorted(p.name for p in job_dir.iterdir())
    # .run.lock: rank 0's run-directory lock (tinygpt.cli.paths), one per job, not per rank
    expected = [".hydra", ".run.lock", "checkpoints", "plots", "summary.json", "tb", "train.log"]
    assert names == expected, names
    # Rank 0's only: its logger's events and its HParams session's (a second writer, one run).
    events = sorted((job_dir / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 2 and len({p.name.split(".")[-2] for p in events}) == 1  # one pid
    assert sorted(p.name for p in (job_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_ddp_run_writes_one_run_directory(tiny_text_file, tmp_path):
    # In bf16-mixed, which trainer=ddp picks on a GPU, with the fused AdamW and clipping.
    before = outputs_listing()
    run_dir, probe_dir = tmp_path / "run", tmp_path / "probe"
    probe_dir.mkdir()
    result = run_ddp(
        "trainer.precision=bf16-mixed",
        "trainer.gradient_clip_val=0.5",
        f"data.path={tiny_text_file}",
        f"hydra.run.dir={run_dir}",
        "+callbacks.probe._target_=probes.FirstBatchProbe",
        f"+callbacks.probe.out_dir={probe_dir}",
        "+callbacks.clipping._target_=probes.ClippingProbe",
        f"+callbacks.clipping.out_dir={probe_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert outputs_listing() == before  # no stray run directory from rank 1
    assert_written_once(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 30
    assert summary["tokens_seen"] == 30 * 2 * 8 * 16  # both ranks' batches count
    assert summary["final_val_loss"] < 3.0  # down from about ln(vocab) = 3.2
    rank0 = json.loads((probe_dir / "rank0.json").read_text())
    rank1 = json.loads((probe_dir / "rank1.json").read_text())
    assert rank0["world"] == rank1["world"] == 2
    assert rank0["batch"] != rank1["batch"]  # ranks draw different batches
    # Both ranks map the one token cache: views of the file, no copy of the ids in either.
    cache = f"{tiny_text_file}.tokens"
    assert rank0["data"] == rank1["data"] == [["memmap", cache, False]] * 2
    assert sum(line.startswith("{") for line in result.stdout.splitlines()) == 1  # one summary
    clipping = json.loads((probe_dir / "probe.json").read_text())
    assert (clipping["precision"], clipping["fused"]) == ("bf16-mixed", True)
    assert_clipped(clipping)


def test_ddp_multirun_writes_one_directory_per_job(tiny_text_file, tmp_path):
    before = outputs_listing()
    sweep = tmp_path / "sweep"
    result = run_ddp(
        "seed=1,2",
        "trainer.max_steps=10",
        f"data.path={tiny_text_file}",
        f"hydra.sweep.dir={sweep}",
        multirun=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert outputs_listing() == before
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name.split("_")[0] for p in jobs] == ["0", "1"]  # two jobs, not a sweep per rank
    for job in jobs:
        assert_written_once(job)
