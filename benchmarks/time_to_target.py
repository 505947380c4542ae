"""Wall time from launch until val loss first reaches a target: train.py against nanoGPT.

    python benchmarks/time_to_target.py experiment=cpu_fast --target 1.88
    python benchmarks/time_to_target.py experiment=nanogpt_baby trainer=gpu --target 1.47 \
        --device cuda

Both sides run as whole processes, as their users launch them, alternating ``--rounds`` times so
a load swing on a shared machine hits both; start-up, data loading, compilation and evaluations
all count. Ours is read from the run's own TensorBoard events (each val/loss point carries its
wall-clock time); nanoGPT's from the time each of its "step N: ... val loss" lines arrives.
nanoGPT runs its recipe for the device (NANOGPT_RECIPES). Medians over the rounds; prints a table
and writes benchmarks/results/time_to_target_<name>.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from common import machine_name, print_table, write_json
from peers import DEFAULT_NANOGPT, check_nanogpt, run_nanogpt, run_tinygpt

# nanoGPT's shakespeare_char config plus these: its CPU recipe (from its README, with the
# evaluation cadence its config has), and the config as is on a GPU.
NANOGPT_RECIPES = {
    "cpu": {
        "device": "cpu",
        "compile": False,
        "eval_iters": 20,
        "log_interval": 1,
        "block_size": 64,
        "batch_size": 12,
        "n_layer": 4,
        "n_head": 4,
        "n_embd": 128,
        "max_iters": 2000,
        "lr_decay_iters": 2000,
        "dropout": 0.0,
    },
    "cuda": {"device": "cuda"},
}


def seconds_or_none(reached: tuple[float, int] | None) -> float | None:
    return None if reached is None else round(reached[0], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="train.py overrides")
    parser.add_argument("--target", type=float, required=True)
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of each side")
    parser.add_argument("--nanogpt", default=DEFAULT_NANOGPT, help="nanoGPT checkout")
    parser.add_argument("--no-peer", action="store_true", help="time train.py alone")
    parser.add_argument("--name", default=None, help="name of the JSON file")
    parser.add_argument("--device", default="cpu", choices=sorted(NANOGPT_RECIPES))
    args = parser.parse_args()
    nanogpt = None if args.no_peer else check_nanogpt(args.nanogpt)
    recipe = NANOGPT_RECIPES[args.device]

    runs = {"tinygpt": [], "nanogpt": []}
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            # Alternate which side goes first, so neither always meets the warmer machine.
            order = ("tinygpt", "nanogpt") if n % 2 == 0 else ("nanogpt", "tinygpt")
            for side in order:
                out = Path(tmp) / f"{side}{n}"
                if side == "tinygpt":
                    runs[side].append(run_tinygpt(args.overrides, out))
                elif nanogpt is not None:
                    runs[side].append(run_nanogpt(nanogpt, recipe, out))

    def summary(side: str) -> dict:
        reached = [r.seconds_to(args.target) for r in runs[side]]
        times = [t for t, _ in filter(None, reached)]
        return {
            "seconds_to_target": [seconds_or_none(r) for r in reached],
            "median_seconds_to_target": (
                round(statistics.median(times), 2) if len(times) == len(reached) else None
            ),
            "process_seconds": [round(r.seconds, 2) for r in runs[side]],
            "best_val_loss": [round(min(v for _, _, v in r.val_points), 4) for r in runs[side]],
            "val_curves": [
                [(s, round(v, 4), round(t, 2)) for t, s, v in r.val_points] for r in runs[side]
            ],
        }

    ours = summary("tinygpt")
    theirs = summary("nanogpt") if nanogpt is not None else None
    rows = [
        [
            name,
            min(side["best_val_loss"]),
            side["median_seconds_to_target"] or "not reached (every round)",
            statistics.median(side["process_seconds"]),
        ]
        for name, side in (
            ("train.py " + (" ".join(args.overrides) or "(defaults)"), ours),
            ("nanoGPT " + args.device + " recipe", theirs),
        )
        if side is not None
    ]
    print(f"device: {machine_name(args.device)}")
    print_table(["run", "best val", f"median s to val <= {args.target}", "median process s"], rows)
    ratio = None
    if theirs and ours["median_seconds_to_target"] and theirs["median_seconds_to_target"]:
        ratio = round(ours["median_seconds_to_target"] / theirs["median_seconds_to_target"], 3)
        print(f"time to target vs nanoGPT: {ratio:.2f}x of its time")
    name = args.name or "time_to_target_" + "_".join(o.replace("=", "-") for o in args.overrides)
    path = write_json(
        name,
        {
            "device": machine_name(args.device),
            "overrides": args.overrides,
            "target": args.target,
            "rounds": args.rounds,
            "nanogpt_recipe": None if theirs is None else recipe,
            "ratio_vs_nanogpt": ratio,
            "tinygpt": ours,
            "nanogpt": theirs,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
