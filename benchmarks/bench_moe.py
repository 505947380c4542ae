"""Mixture-of-experts speed: MoE vs dense training steps, and the MoE layer vs HF Mixtral's.

    PYTHONPATH=. python benchmarks/bench_moe.py                 # CPU, ~1-2 minutes
    PYTHONPATH=. python benchmarks/bench_moe.py --device cuda   # GPU check

1. Training step (forward, backward, AdamW step) of TinyGPT with ffn="moe" (4 experts, top-1,
   each expert the dense MLP's shape, so the same active parameters) over the dense model, at
   the TinyGPT notebook's size (2 layers, 4 heads, 64 dims, context 32, batch 64) and nanoGPT's
   "baby" size (6 layers, 6 heads, 384 dims, context 256; batch 4 on CPU).
2. The MoE layer alone (forward + backward) against Hugging Face transformers'
   MixtralSparseMoeBlock with the same hidden size, intermediate size 4C, 4 experts, top-1
   (needs transformers, in the ``dev`` extra). Mixtral's experts are SwiGLU (three matrices,
   not two), so it does 1.5x our expert arithmetic: the comparison is of the two layers as
   shipped.

Models are timed side by side, on the same batch: warm-up, then rounds that alternate between
them (dense, MoE, dense, MoE, ...), each round a few steps of each. A ratio is the median of the
per-round ratios, with their spread (min-max): on a shared machine only ratios measured in the
same round mean anything, so the load average is recorded too. Prints a table and writes
benchmarks/results/moe.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from tinygpt.models import TinyGPT, TinyGPTConfig
from tinygpt.models.moe import MoEFeedForward
from tinygpt.training.optim import fused_adamw


def dense_mlp(config: TinyGPTConfig) -> torch.nn.Module:
    """The dense feed-forward as TinyGPT computes it, as a module of its own."""
    C = config.n_embd
    return torch.nn.Sequential(
        torch.nn.Linear(C, 4 * C), torch.nn.GELU(), torch.nn.Linear(4 * C, C)
    )


NOTEBOOK_SIZE = dict(n_layer=2, n_head=4, n_embd=64, block_size=32)
BABY_SIZE = dict(n_layer=6, n_head=6, n_embd=384, block_size=256)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{name or platform.machine()} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_side_by_side(
    fns: dict[str, Callable[[], None]],
    device: torch.device,
    warmup: int,
    repeats: int,
    steps: int,
) -> dict[str, list[float]]:
    """Seconds per call of each function in each round, the rounds alternating between them."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            synchronize(device)
            times[name].append((time.perf_counter() - start) / steps)
    return times


def ratio(times: dict[str, list[float]], num: str, den: str) -> dict:
    """Median and spread of the per-round ratios ``num / den``."""
    ratios = [a / b for a, b in zip(times[num], times[den], strict=True)]
    return {
        "ratio": statistics.median(ratios),
        "ratio_spread": [min(ratios), max(ratios)],
        "ratio_of": f"{num} / {den}",
        "rounds": len(ratios),
    }


def train_step_fn(
    config: TinyGPTConfig, batch: int, device: torch.device, fused: bool
) -> tuple[Callable[[], None], int, list[float]]:
    """A closure doing one training step on a fixed random batch, the parameter count, and the
    list it appends each AdamW step's seconds to (MoE updates ~3x the dense parameters)."""
    model = TinyGPT(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=fused)
    optimizer_times: list[float] = []
    idx = torch.randint(0, config.vocab_size, (batch, config.block_size), device=device)
    targets = torch.randint(0, config.vocab_size, (batch, config.block_size), device=device)

    def step() -> None:
        _, loss = model(idx, targets)
        loss = loss + model.aux_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        synchronize(device)
        start = time.perf_counter()
        optimizer.step()
        synchronize(device)
        optimizer_times.append(time.perf_counter() - start)

    return step, model.num_parameters(), optimizer_times


def bench_train_steps(
    label: str, size: dict, batch: int, device: torch.device, args: argparse.Namespace
) -> dict:
    torch.manual_seed(0)
    fused = not args.foreach_adamw and fused_adamw(device)  # as TinyGPTModule chooses
    dense, dense_params, dense_opt = train_step_fn(TinyGPTConfig(**size), batch, device, fused)
    moe, moe_params, moe_opt = train_step_fn(TinyGPTConfig(**size, ffn="moe"), batch, device, fused)
    small = label == "notebook size"
    times = time_side_by_side(
        {"dense": dense, "moe": moe},
        device,
        args.warmup if small else 1,
        args.repeats if small else args.baby_repeats,
        args.steps if small else 1,
    )
    t = {name: statistics.median(v) for name, v in times.items()}
    adamw = f"adamw_{'fused' if fused else 'foreach'}"
    return {
        "name": f"train step, {label}",
        "shape": {**size, "batch": batch, "num_experts": 4, "experts_per_token": 1},
        "params": {"dense": dense_params, "moe": moe_params},
        "ms": {
            "dense": t["dense"] * 1e3,
            "moe": t["moe"] * 1e3,
            # Medians over all steps, warm-up included; part of the step times above.
            f"dense: {adamw} step": statistics.median(dense_opt) * 1e3,
            f"moe: {adamw} step": statistics.median(moe_opt) * 1e3,
        },
        **ratio(times, "moe", "dense"),
    }


def layer_fwd_bwd_fn(layer: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    grad = torch.randn_like(x)

    def run() -> None:
        layer.zero_grad(set_to_none=True)
        out = layer(x)
        out = out[0] if isinstance(out, tuple) else out
        out.backward(grad)

    return run


# batched_mm is left out: it gathers a weight matrix per token, minutes per step on CPU.
HF_IMPLEMENTATIONS = ("eager", "grouped_mm")


def mixtral_block(n_embd: int, implementation: str, device: torch.device) -> torch.nn.Module:
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    config = MixtralConfig(
        hidden_size=n_embd,
        intermediate_size=4 * n_embd,
        num_local_experts=4,
        num_experts_per_tok=1,
        router_jitter_noise=0.0,
    )
    # Which experts forward transformers dispatches to; a model sets it, a bare block does not.
    config._experts_implementation = implementation
    block = MixtralSparseMoeBlock(config)
    with torch.no_grad():
        for param in block.parameters():  # HF leaves them uninitialised until from_pretrained
            param.normal_(0.0, 0.02)
    return block.to(device).train()


def bench_layers(
    label: str, n_embd: int, tokens: tuple[int, int], device: torch.device, args: argparse.Namespace
) -> dict:
    torch.manual_seed(0)
    config = TinyGPTConfig(n_embd=n_embd, n_head=4 if n_embd % 4 == 0 else 1, ffn="moe")
    x = torch.randn(*tokens, n_embd, device=device, requires_grad=True)
    fns = {
        "tinygpt_moe": layer_fwd_bwd_fn(MoEFeedForward(config).to(device).train(), x),
        "tinygpt_dense_mlp": layer_fwd_bwd_fn(dense_mlp(config).to(device).train(), x),
    }
    for implementation in HF_IMPLEMENTATIONS:
        try:
            run = layer_fwd_bwd_fn(mixtral_block(n_embd, implementation, device), x)
            run()  # an implementation this torch/device lacks fails here, not mid-timing
        except ImportError as exc:
            print(f"skipping HF Mixtral ({exc}); install the 'bench' extra")
            break
        except Exception as exc:  # noqa: BLE001 - report and carry on with the others
            print(f"skipping HF Mixtral {implementation}: {type(exc).__name__}: {exc}")
            continue
        fns[f"hf_mixtral_{implementation}"] = run
    times = time_side_by_side(fns, device, args.warmup, args.repeats, args.layer_steps)
    t = {name: statistics.median(v) for name, v in times.items()}
    result = {
        "name": f"MoE layer fwd+bwd, {label}",
        "shape": {"tokens": list(tokens), "n_embd": n_embd, "num_experts": 4, "top_k": 1},
        "ms": {name: v * 1e3 for name, v in t.items()},
    }
    hf = {name: v for name, v in t.items() if name.startswith("hf_")}
    if hf:  # against the fastest HF implementation
        result |= ratio(times, "tinygpt_moe", min(hf, key=hf.get))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=15, help="alternating rounds")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="steps per round, notebook size")
    parser.add_argument("--layer-steps", type=int, default=3)
    parser.add_argument("--baby-batch", type=int, default=None, help="default 4 on CPU, 64 on GPU")
    parser.add_argument("--baby-repeats", type=int, default=5)
    parser.add_argument(
        "--foreach-adamw", action="store_true", help="PyTorch's default foreach AdamW, not fused"
    )
    parser.add_argument("--out", default="benchmarks/results/moe.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    baby_batch = args.baby_batch or (64 if device.type == "cuda" else 4)

    load_before = os.getloadavg()
    results = [
        bench_train_steps("notebook size", NOTEBOOK_SIZE, 64, device, args),
        bench_train_steps("baby size", BABY_SIZE, baby_batch, device, args),
        bench_layers("notebook size", 64, (64, 32), device, args),
        bench_layers("baby size", 384, (baby_batch, 256), device, args),
    ]
    report = {
        "device": device_name(device),
        "torch": torch.__version__,
        "adamw": "foreach" if args.foreach_adamw or not fused_adamw(device) else "fused",
        # 1, 5 and 15-minute load averages; a 2-core machine at load 2 is already fully busy.
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "results": results,
    }

    print(f"device: {report['device']}, torch {report['torch']}, load {report['load_average']}")
    print(f"{'benchmark':<32} {'variant':<28} {'median ms':>10} {'ratio':>8} {'spread':>13}")
    for r in results:
        lo, hi = r.get("ratio_spread", (float("nan"),) * 2)
        print(
            f"{r['name']:<32} {'':<28} {'':>10} {r.get('ratio', float('nan')):>8.3f}"
            f" {lo:>6.3f}-{hi:<6.3f} {r.get('ratio_of', '')}, {r.get('rounds', 0)} rounds"
        )
        for variant, ms in r["ms"].items():
            print(f"{'':<32} {variant:<28} {ms:>10.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
