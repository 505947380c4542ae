"""The two processes the benchmarks time side by side: ``python train.py`` and nanoGPT's own
``train.py``, each launched whole, as their users launch them.

nanoGPT is a scratch clone outside this repository (never committed), given by ``--nanogpt`` or
``$NANOGPT_DIR``; its data/shakespeare_char/ must be prepared from our copy of the text:

    cp data/tinyshakespeare.txt $NANOGPT_DIR/data/shakespeare_char/input.txt
    (cd $NANOGPT_DIR/data/shakespeare_char && python prepare.py)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NANOGPT = os.environ.get("NANOGPT_DIR", "/work/peer/nanoGPT")

# nanoGPT's log lines: one per training iteration (log_interval=1), one per evaluation.
ITER_LINE = re.compile(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms")
EVAL_LINE = re.compile(r"^step (\d+): train loss [\d.]+, val loss ([\d.]+)")


@dataclass
class ProcessRun:
    """One whole process: its wall time and, per evaluation, (seconds since launch, step, val)."""

    seconds: float
    val_points: list[tuple[float, int, float]]
    step_ms: list[tuple[int, float]]  # nanoGPT only: (iteration, its own time in ms)

    def seconds_to(self, target: float) -> tuple[float, int] | None:
        """Seconds from launch and step of the first evaluation at or below ``target``."""
        return next(((t, s) for t, s, v in self.val_points if v <= target), None)


def check_nanogpt(path: str) -> Path:
    root = Path(path)
    data = root / "data" / "shakespeare_char"
    if not (root / "train.py").exists() or not (data / "train.bin").exists():
        sys.exit(
            f"error: no prepared nanoGPT at {root}; give --nanogpt or NANOGPT_DIR, and prepare its "
            "data from ours: cp data/tinyshakespeare.txt <nanoGPT>/data/shakespeare_char/"
            "input.txt; cd <nanoGPT>/data/shakespeare_char && python prepare.py"
        )
    return root


def run_nanogpt(root: Path, args: dict[str, object], out_dir: Path) -> ProcessRun:
    """nanoGPT's train.py with its shakespeare_char config and ``args`` (``--key=value``)."""
    command = [
        sys.executable,
        "-u",  # unbuffered, so each line's arrival time is when nanoGPT printed it
        "train.py",
        "config/train_shakespeare_char.py",
        f"--out_dir={out_dir}",
        *(f"--{key}={value}" for key, value in args.items()),
    ]
    launched = time.time()
    val_points, step_ms = [], []
    with subprocess.Popen(
        command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        output = []
        for line in process.stdout:
            output.append(line)
            if match := EVAL_LINE.match(line):
                val_points.append((time.time() - launched, int(match[1]), float(match[2])))
            elif match := ITER_LINE.match(line):
                step_ms.append((int(match[1]), float(match[2])))
    seconds = time.time() - launched
    if process.returncode != 0:
        sys.exit(f"error: nanoGPT failed ({process.returncode}):\n{''.join(output[-20:])}")
    return ProcessRun(seconds, val_points, step_ms)


def run_tinygpt(overrides: list[str], run_dir: Path, root: Path = ROOT) -> ProcessRun:
    """``python train.py overrides`` (of the checkout ``root``); evaluations read from the run's
    TensorBoard events."""
    command = [sys.executable, str(root / "train.py"), *overrides, f"hydra.run.dir={run_dir}"]
    launched = time.time()
    subprocess.run(command, cwd=root, check=True, stdout=subprocess.DEVNULL)
    seconds = time.time() - launched
    events = tensorboard_scalars(run_dir, "val/loss")
    return ProcessRun(seconds, [(t - launched, s, v) for t, s, v in events], [])


def tensorboard_scalars(run_dir: Path, tag: str) -> list[tuple[float, int, float]]:
    """(wall time, step, value) of every point of ``tag`` the run logged."""
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.wall_time, e.step, e.value) for e in events.Scalars(tag)]
