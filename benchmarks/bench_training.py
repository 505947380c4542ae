"""Training throughput: ``python train.py`` against nanoGPT, and against a bare PyTorch loop.

    python benchmarks/bench_training.py [--steps 150] [--device cpu|cuda] [--sizes notebook,baby]

First, at the notebook's size, the two whole processes as users run them, alternating
``--peer-rounds`` times: ``python train.py`` (default callbacks, TensorBoard logging) and nanoGPT's
train.py with the same model (bias on, dropout 0) and batch. Tokens/s is the median over the run's
steps, evaluations left out: ours from the wall times of its 50-step train/loss points in
TensorBoard, nanoGPT's from its per-iteration times. ``--peer-rounds 0`` skips it.

Then, in-process, the framework's own cost:
Both sides train the same model on the same batches with the same optimizer, schedule and
gradient clipping; the Lightning side runs the project's LightningModule with logging, checkpoints
and the progress bar off (the framework's own cost), then with the default TensorBoard logging
on. Steady-state step time: the median over the timed steps after a warm-up, per run; each loop
runs ``--rounds`` times, alternating with the others, and the median of its runs is reported.
Prints a table and writes benchmarks/results/training.json. MFU is reported on CUDA (peak from
the device name).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch
from common import machine_name, print_table, write_json
from peers import (
    DEFAULT_NANOGPT,
    ROOT,
    check_nanogpt,
    run_nanogpt,
    run_tinygpt,
    tensorboard_scalars,
)

from tinygpt.data import CharTokenizer
from tinygpt.data.datamodule import CharDataModule
from tinygpt.data.windows import RandomWindows
from tinygpt.models import TinyGPTConfig
from tinygpt.training import OptimConfig, TinyGPTModule
from tinygpt.training.optim import build_optimizer, fused_adamw

SIZES = {
    "notebook": (TinyGPTConfig(vocab_size=65), 64),
    "baby": (
        TinyGPTConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384, bias=False),
        64,
    ),
}
# Dense bf16 tensor-core peaks, FLOP/s, looked up by the device name.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


def flops_per_token(config: TinyGPTConfig, params: int) -> float:
    """PaLM's estimate (as nanoGPT's estimate_mfu): 6N plus attention's 12 * L * C * T."""
    return 6 * params + 12 * config.n_layer * config.n_embd * config.block_size


def peak_flops(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16.items() if key in name), None)


def make_module(config: TinyGPTConfig, steps: int) -> TinyGPTModule:
    torch.manual_seed(0)
    tokenizer = CharTokenizer("".join(chr(33 + i) for i in range(config.vocab_size)))
    return TinyGPTModule(config, tokenizer, OptimConfig(warmup_steps=10), {"seed": 0})


def bare_loop(config, batch_size, steps, warmup, device) -> list[float]:
    """What a user would write by hand: the same model, optimizer, schedule and clipping."""
    module = make_module(config, steps).to(device)
    fused = fused_adamw(device)  # as TinyGPTModule chooses
    optimizer, scheduler = build_optimizer(module.named_parameters(), module.optim, steps, fused)
    stream = iter(RandomWindows(DATA, config.block_size, batch_size, 0, 0, 0))
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else None
    times = []
    for step in range(steps):
        start = time.perf_counter()
        x, y = (t.to(device, non_blocking=True) for t in next(stream))
        with amp or contextlib.nullcontext():
            _, loss = module.model(x, y)
            loss = loss + module.model.aux_loss()  # MoE balancing losses, as the module adds
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        loss.item()  # as Lightning's progress bar would, and to time the step honestly
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return times


class StepTimer(L.Callback):
    """Time from one batch's end to the next: fetching, step, hooks and logging included."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self._last = warmup, [], 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if batch_idx > self.warmup:
            self.times.append(now - self._last)
        self._last = now


def lightning_loop(config, batch_size, steps, warmup, device, with_logging) -> list[float]:
    from lightning.pytorch.loggers import TensorBoardLogger

    module = make_module(config, steps)
    timer = StepTimer(warmup)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            accelerator="gpu" if device.startswith("cuda") else "cpu",
            devices=1,
            precision="bf16-mixed" if device.startswith("cuda") else "32-true",
            max_steps=steps,
            max_epochs=-1,
            gradient_clip_val=1.0,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=TensorBoardLogger(tmp, name="", version="tb") if with_logging else False,
            log_every_n_steps=50,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[timer],
        )
        loader = torch.utils.data.DataLoader(
            RandomWindows(DATA, config.block_size, batch_size, 0, 0, 0), batch_size=None
        )
        trainer.fit(module, train_dataloaders=loader)
    return timer.times


# The notebook's size, 400 steps, with each side's evaluation every 250 steps left out.
PEER_STEPS, PEER_EVAL_INTERVAL, PEER_BATCH, PEER_BLOCK = 400, 250, 64, 32
NANOGPT_NOTEBOOK = {
    "compile": False,
    "log_interval": 1,
    "eval_iters": 20,
    "eval_interval": PEER_EVAL_INTERVAL,
    "block_size": PEER_BLOCK,
    "batch_size": PEER_BATCH,
    "n_layer": 2,
    "n_head": 4,
    "n_embd": 64,
    "bias": True,
    "dropout": 0.0,
    "max_iters": PEER_STEPS,
    "lr_decay_iters": PEER_STEPS,
}


def window_rate(points: list[tuple[float, int]], interval: int = PEER_EVAL_INTERVAL) -> float:
    """Median tokens/s over the intervals between (wall time, step) points that hold no
    evaluation (an interval that crosses a multiple of ``interval``)."""
    rates = []
    for (t0, s0), (t1, s1) in itertools.pairwise(points):
        if s1 // interval == s0 // interval and s1 > s0:
            rates.append((s1 - s0) * PEER_BATCH * PEER_BLOCK / (t1 - t0))
    return statistics.median(rates)


def tinygpt_tokens_per_second(run_dir: Path) -> float:
    """Median rate over the run's train/loss logging intervals that hold no evaluation."""
    return window_rate([(t, s) for t, s, _ in tensorboard_scalars(run_dir, "train/loss")])


def bare_process(steps: int) -> list[tuple[float, int]]:
    """The bare loop of ``python train.py``'s defaults (data, seed, model, AdamW, schedule,
    clipping): (wall time, step) at the steps where train.py logs train/loss, as TensorBoard
    numbers them (the 50th step is step 49)."""
    data = CharDataModule(cache_dir=str(ROOT / "data"))
    data.prepare_data()
    data.setup()
    module = TinyGPTModule(TinyGPTConfig(vocab_size=data.tokenizer.vocab_size), data.tokenizer)
    optimizer, scheduler = build_optimizer(module.named_parameters(), OptimConfig(), steps, True)
    stream = iter(RandomWindows(data.train_data, 32, PEER_BATCH, data.seed, 0, 0))
    points = []
    for step in range(steps):
        x, y = next(stream)
        _, loss = module.model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if (step + 1) % 50 == 0:
            loss.item()
            points.append((time.time(), step))
    return points


TAX_STEPS = 300  # validated only at the end: five 50-step windows from step 49 to 299


def versus_bare(rounds: int, baseline: str | None) -> dict:
    """``python train.py`` (notebook size, defaults, TAX_STEPS steps) against its bare loop,
    alternating; per round, the ratio of the two median 50-step rates over the same windows.
    ``baseline``: another checkout whose train.py runs in the same rounds (before and after)."""
    args = [f"trainer.max_steps={TAX_STEPS}", f"trainer.val_check_interval={TAX_STEPS}"]
    roots = {"train.py": ROOT, **({"baseline": Path(baseline)} if baseline else {})}
    rounds_out = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(rounds):
            row = {"load": os.getloadavg()[0]}
            sides = ["bare", *roots]
            for side in sides if n % 2 == 0 else sides[::-1]:
                if side == "bare":
                    row["bare"] = window_rate(bare_process(TAX_STEPS), TAX_STEPS)
                    continue
                launched = time.time()
                run_tinygpt(args, Path(tmp) / f"{side}{n}", roots[side])
                points = tensorboard_scalars(Path(tmp) / f"{side}{n}", "train/loss")
                row[side] = rate = window_rate([(t, s) for t, s, _ in points], TAX_STEPS)
                # Launch to the first step: the first point, less its steps at the median rate.
                t0, s0, _ = points[0]
                row[f"{side} first step s"] = (
                    t0 - launched - (s0 + 1) * PEER_BATCH * PEER_BLOCK / rate
                )
            for side in roots:
                row[f"{side} ratio"] = row[side] / row["bare"]
            rounds_out.append(row)
            print(f"round {n}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    summary = {"train.py": " ".join(args), "baseline": baseline}
    for side in roots:
        for key in (f"{side} ratio", f"{side} first step s"):
            values = [r[key] for r in rounds_out]
            summary[key] = {
                "median": round(statistics.median(values), 3),
                "min": round(min(values), 3),
                "max": round(max(values), 3),
            }
            print(
                f"{key}: median {statistics.median(values):.3f} over {rounds} alternating "
                f"rounds (min {min(values):.3f}, max {max(values):.3f})"
            )
    summary["rounds"] = [{k: round(v, 3) for k, v in r.items()} for r in rounds_out]
    return summary


def nanogpt_tokens_per_second(step_ms: list[tuple[int, float]]) -> float:
    """From nanoGPT's per-iteration times, leaving out the first ten and its evaluations."""
    kept = [ms for i, ms in step_ms if i >= 10 and i % PEER_EVAL_INTERVAL]
    return PEER_BATCH * PEER_BLOCK / (statistics.median(kept) / 1e3)


def versus_nanogpt(nanogpt: Path, device: str, rounds: int) -> dict:
    """``python train.py`` against nanoGPT at the notebook's size, whole processes, alternating."""
    ours_args = [
        f"trainer.max_steps={PEER_STEPS}",
        f"trainer.val_check_interval={PEER_EVAL_INTERVAL}",
        f"data.batch_size={PEER_BATCH}",
        *(["trainer=gpu"] if device.startswith("cuda") else []),
    ]
    rates = {"tinygpt": [], "nanogpt": []}
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(rounds):
            order = ("tinygpt", "nanogpt") if n % 2 == 0 else ("nanogpt", "tinygpt")
            for side in order:
                out = Path(tmp) / f"{side}{n}"
                if side == "tinygpt":
                    run_tinygpt(ours_args, out)
                    rates[side].append(tinygpt_tokens_per_second(out))
                else:
                    run = run_nanogpt(nanogpt, {"device": device, **NANOGPT_NOTEBOOK}, out)
                    rates[side].append(nanogpt_tokens_per_second(run.step_ms))
    ours, theirs = statistics.median(rates["tinygpt"]), statistics.median(rates["nanogpt"])
    print(
        f"notebook size, python train.py {ours / 1e3:.1f}k tokens/s vs nanoGPT "
        f"{theirs / 1e3:.1f}k (medians of {rounds} alternating runs): {ours / theirs:.2f}x"
    )
    return {
        "train.py": " ".join(ours_args),
        "nanogpt_args": NANOGPT_NOTEBOOK,
        "tinygpt_tokens_per_second": [round(r) for r in rates["tinygpt"]],
        "nanogpt_tokens_per_second": [round(r) for r in rates["nanogpt"]],
        "ratio": round(ours / theirs, 3),
    }


LOOPS = ("bare", "lightning", "lightning+tb")


def run_loop(name: str, config, batch_size: int, args: argparse.Namespace) -> list[float]:
    """Per-step seconds of one run of the loop ``name`` (one of LOOPS)."""
    if name == "bare":
        return bare_loop(config, batch_size, args.steps, args.warmup, args.device)
    with_logging = name == "lightning+tb"
    return lightning_loop(config, batch_size, args.steps, args.warmup, args.device, with_logging)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", default="notebook,baby")
    parser.add_argument("--ffn", default="dense,moe")
    parser.add_argument("--baby-batch", type=int, default=None, help="batch at the baby size")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of each loop")
    parser.add_argument("--peer-rounds", type=int, default=3, help="0: skip nanoGPT")
    parser.add_argument("--tax-rounds", type=int, default=7, help="train.py vs bare; 0: skip")
    parser.add_argument("--baseline", help="another checkout's train.py in the same rounds")
    parser.add_argument("--nanogpt", default=DEFAULT_NANOGPT, help="nanoGPT checkout")
    parser.add_argument("--out", default="training", help="name of the JSON file in results/")
    args = parser.parse_args()
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    tax = versus_bare(args.tax_rounds, args.baseline) if args.tax_rounds else None
    peer = None
    if args.peer_rounds:
        peer = versus_nanogpt(check_nanogpt(args.nanogpt), args.device, args.peer_rounds)
    rows, results = [], []
    for size in args.sizes.split(","):
        base, batch_size = SIZES[size]
        if size == "baby" and args.baby_batch:
            batch_size = args.baby_batch
        elif size == "baby" and not args.device.startswith("cuda"):
            batch_size = 4  # keeps the CPU run short; tokens/s is what is compared
        for ffn in args.ffn.split(","):
            config = replace(base, ffn=ffn)
            params = make_module(config, 1).model.num_parameters()
            tokens = batch_size * config.block_size
            # Rounds alternate the loops, so a load swing on a shared machine hits all three;
            # each loop's step time is the median over its rounds' medians.
            timings = {name: [] for name in LOOPS}
            if not args.rounds:
                continue
            for _ in range(args.rounds):
                for name in LOOPS:
                    times = run_loop(name, config, batch_size, args)
                    timings[name].append(statistics.median(times))
            medians = {k: statistics.median(v) for k, v in timings.items()}
            peak = peak_flops(args.device)
            for loop, step_s in medians.items():
                tps = tokens / step_s
                mfu = flops_per_token(config, params) * tps / peak if peak else None
                entry = {
                    "size": size,
                    "ffn": ffn,
                    "loop": loop,
                    "batch_size": batch_size,
                    "block_size": config.block_size,
                    "parameters": params,
                    "step_ms": round(step_s * 1e3, 3),
                    "tokens_per_second": round(tps),
                    "vs_bare": round(medians["bare"] / step_s, 3),
                    "mfu": None if mfu is None else round(mfu, 4),
                }
                results.append(entry)
                rows.append(
                    [
                        size,
                        ffn,
                        loop,
                        batch_size,
                        f"{entry['step_ms']:.2f}",
                        entry["tokens_per_second"],
                        f"{entry['vs_bare']:.3f}",
                        "-" if mfu is None else f"{100 * mfu:.1f}%",
                    ]
                )
    print(f"device: {machine_name(args.device)}")
    print_table(
        ["size", "ffn", "loop", "batch", "step ms", "tokens/s", "speed vs bare", "MFU"], rows
    )
    path = write_json(
        args.out,
        {
            "device": machine_name(args.device),
            "steps": args.steps,
            "rounds": args.rounds,
            "results": results,
            "vs_nanogpt": peer,
            "train_py_vs_bare": tax,
        },
    )
    print(f"wrote {path}")


DATA = torch.randint(0, 65, (200_000,), generator=torch.Generator().manual_seed(0))

if __name__ == "__main__":
    main()
