"""Wall time from launching train.py until the run's val loss first reaches a target.

    python benchmarks/time_to_target.py experiment=cpu_fast --target 1.88
    python benchmarks/time_to_target.py experiment=nanogpt_baby trainer=gpu --target 1.47

Runs the whole process as a user would and reads the answer from the run's own TensorBoard
events (each val/loss point carries the wall-clock time it was logged), so start-up, data
loading, compilation and evaluations all count. Prints a table and writes
benchmarks/results/time_to_target_<name>.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine_name, print_table, write_json
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]
# nanoGPT from the design card: its CPU recipe on this machine kind (2 cores), and its
# shakespeare_char recipe (compile, bf16) on one H200 (best val loss, at step 1750).
NANOGPT_REFERENCE = {
    "cpu": ("nanoGPT CPU recipe (design card)", 1.8857, 80.6),
    "cuda": ("nanoGPT shakespeare_char, one H200 (design card)", 1.462, 69.0),
}


def val_points(run_dir: Path) -> list[tuple[float, int, float]]:
    """(wall time, step, val/loss) of every evaluation the run logged."""
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.wall_time, e.step, e.value) for e in events.Scalars("val/loss")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="train.py overrides")
    parser.add_argument("--target", type=float, required=True)
    parser.add_argument("--name", default=None, help="name of the JSON file")
    parser.add_argument("--device", default="cpu", help="for the report only: cpu or cuda")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        command = [
            sys.executable,
            str(ROOT / "train.py"),
            *args.overrides,
            f"hydra.run.dir={run_dir}",
        ]
        launched = time.time()
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        total = time.time() - launched
        points = val_points(run_dir)
    reached = next(((t - launched, s, v) for t, s, v in points if v <= args.target), None)
    best = min(points, key=lambda p: p[2])
    rows = [
        [
            " ".join(args.overrides) or "(defaults)",
            f"{best[2]:.4f} @ {best[1]}",
            "not reached" if reached is None else f"{reached[0]:.1f} s (step {reached[1]})",
            f"{total:.1f} s",
        ]
    ]
    reference = NANOGPT_REFERENCE.get(args.device)
    if reference:
        rows.append([reference[0], f"{reference[1]:.4f}", f"{reference[2]:.1f} s", "-"])
    print(f"device: {machine_name(args.device)}")
    print_table(["run", "best val @ step", f"time to val <= {args.target}", "process"], rows)
    # A ratio only when our target is at least as strict as the loss nanoGPT's time is for.
    if reached is not None and reference and args.target <= reference[1]:
        print(f"time to target vs nanoGPT: {reached[0] / reference[2]:.2f}x of its wall time")
    name = args.name or "time_to_target_" + "_".join(o.replace("=", "-") for o in args.overrides)
    path = write_json(
        name,
        {
            "device": machine_name(args.device),
            "overrides": args.overrides,
            "target": args.target,
            "seconds_to_target": None if reached is None else round(reached[0], 2),
            "step_at_target": None if reached is None else reached[1],
            "process_seconds": round(total, 2),
            "val_curve": [(s, round(v, 5), round(t - launched, 2)) for t, s, v in points],
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
