"""Training on texts far larger than TinyShakespeare: memory, start-up and speed against size.

    python benchmarks/bench_scale.py [--sizes 1MB,200MB,1GB] [--steps 20] [--workdir DIR]
                                     [train.py overrides ...]

For each size, TinyShakespeare is repeated into a text of exactly that many bytes, written in a
temporary directory (``--workdir``; never in the repository, removed afterwards). Then
``python train.py data.path=<text>`` trains ``--steps`` steps twice, each in a fresh process:
first with no token cache (the run tokenizes the text), then with the cache the first run left.
Per run: the process's peak resident memory (its own, from wait4) and its peak private memory,
sampled every 50 ms from /proc (RssAnon: what the process allocated, without the pages of mapped
files: the token cache's pages that training touches count in the first figure only, as shared,
reclaimable page cache); the time from launch to the end of the first training step (imports,
fingerprint, cache, sanity validation and the step itself; read from the run's TensorBoard
events, which log train/loss every step here); and the run's training tokens/s (summary.json).
Validation is limited to 2 batches so the split's size does not dominate. Prints a table and
writes benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import machine_name, print_table, write_json
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tinygpt.data.download import (
    TINY_SHAKESPEARE_SHA256,
    TINY_SHAKESPEARE_SIZE,
    TINY_SHAKESPEARE_URL,
    fetch_verified,
)
from tinygpt.data.token_cache import cache_locations

ROOT = Path(__file__).resolve().parents[1]
UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9}


def parse_size(text: str) -> int:
    """``200MB`` -> 200_000_000 bytes (decimal units: KB, MB, GB)."""
    match = re.fullmatch(r"(\d+)(KB|MB|GB)", text.strip().upper())
    if not match:
        raise argparse.ArgumentTypeError(f"a size is a number and KB, MB or GB, got {text!r}")
    return int(match[1]) * UNITS[match[2]]


def repeat_text(source: Path, dest: Path, size: int) -> Path:
    """``dest`` holding ``source`` repeated and cut to exactly ``size`` bytes (an ASCII source,
    so any cut is at a character boundary)."""
    block = source.read_bytes()
    with dest.open("wb") as out:
        for _ in range(size // len(block)):
            out.write(block)
        out.write(block[: size % len(block)])
    return dest


def first_step_seconds(run_dir: Path, launched: float) -> float:
    """Seconds from launch to the first train/loss event (logged at the first step's end)."""
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return events.Scalars("train/loss")[0].wall_time - launched


class PrivateMemoryPeak(threading.Thread):
    """Samples a process's private resident memory (RssAnon, /proc/PID/status) until it ends;
    ``peak_kib`` is the largest sample (0 where /proc is not Linux's)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.status, self.interval, self.peak_kib = Path(f"/proc/{pid}/status"), interval, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            try:
                lines = self.status.read_text().splitlines()
            except OSError:  # the process is gone
                return
            for line in lines:
                if line.startswith("RssAnon:"):
                    self.peak_kib = max(self.peak_kib, int(line.split()[1]))


def train_run(text: Path, run_dir: Path, steps: int, overrides: list[str]) -> dict:
    """One ``python train.py`` process on ``text``: peak RSS, time to first step, tokens/s."""
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        f"data.path={text}",
        f"data.cache_dir={text.parent}",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        "trainer.limit_val_batches=2",
        "trainer.log_every_n_steps=1",
        *overrides,
        f"hydra.run.dir={run_dir}",
    ]
    launched = time.time()
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    private = PrivateMemoryPeak(process.pid)
    private.start()
    stderr = process.stderr.read()
    process.stderr.close()
    private.done.set()  # before the wait reaps the process and its /proc entry goes
    private.join()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"train.py failed on {text.name}:\n{stderr[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "peak_rss_mb": round(usage.ru_maxrss / 1024),  # Linux reports KiB
        "peak_private_mb": round(private.peak_kib / 1024),
        "first_step_s": round(first_step_seconds(run_dir, launched), 2),
        "process_s": round(time.time() - launched, 2),
        "tokens_per_second": summary["train_tokens_per_second"],
    }


def measure(text: Path, steps: int, overrides: list[str]) -> dict:
    """The cold run (no cache: it tokenizes) and the warm run (the cache it left) on ``text``."""
    for place in cache_locations(text, text.parent):
        place.unlink(missing_ok=True)
    cold = train_run(text, text.parent / "cold", steps, overrides)
    cache = next(p for p in cache_locations(text, text.parent) if p.exists())
    warm = train_run(text, text.parent / "warm", steps, overrides)
    return {
        "text_bytes": text.stat().st_size,
        "cache_bytes": cache.stat().st_size,
        "cold": cold,
        "warm": warm,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="train.py overrides, for every run")
    parser.add_argument(
        "--sizes",
        type=lambda s: [parse_size(x) for x in s.split(",")],
        default="1MB,200MB,1GB",
        help="text sizes, comma-separated (default 1MB,200MB,1GB)",
    )
    parser.add_argument("--steps", type=int, default=20, help="training steps per run")
    parser.add_argument("--workdir", type=Path, default=None, help="where the texts go")
    parser.add_argument("--out", default="scale", help="name of the JSON file in results/")
    args = parser.parse_args()

    source = fetch_verified(
        TINY_SHAKESPEARE_URL,
        ROOT / "data" / "tinyshakespeare.txt",
        TINY_SHAKESPEARE_SIZE,
        TINY_SHAKESPEARE_SHA256,
    )
    rows, results = [], []
    for size in args.sizes:
        # One directory per size, removed before the next: a 1 GB text and its cache at a time.
        with tempfile.TemporaryDirectory(prefix="tinygpt-scale-", dir=args.workdir) as tmp:
            text = repeat_text(source, Path(tmp) / f"shakespeare-{size}.txt", size)
            entry = {"size_bytes": size, **measure(text, args.steps, args.overrides)}
        results.append(entry)
        cold, warm = entry["cold"], entry["warm"]
        rows.append(
            [
                f"{size / 1e6:g} MB",
                f"{entry['cache_bytes'] / 1e6:.1f} MB",
                f"{cold['peak_rss_mb']} ({cold['peak_private_mb']})",
                f"{warm['peak_rss_mb']} ({warm['peak_private_mb']})",
                f"{cold['first_step_s']:.1f}",
                f"{warm['first_step_s']:.1f}",
                warm["tokens_per_second"],
            ]
        )
        print(f"{size / 1e6:g} MB: {json.dumps(entry)}", flush=True)
    print(f"device: {machine_name()}")
    headers = [
        "text",
        "token cache",
        "peak RSS (private) MB, no cache",
        "peak RSS (private) MB, cache",
        "first step s, no cache",
        "first step s, cache",
        "tokens/s",
    ]
    print_table(headers, rows)
    payload = {
        "device": machine_name(),
        "steps": args.steps,
        "overrides": args.overrides,
        "results": results,
    }
    print(f"wrote {write_json(args.out, payload)}")


if __name__ == "__main__":
    main()
