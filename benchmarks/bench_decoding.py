"""Decoding speed: TinyGPT (with and without the KV cache) against Hugging Face GPT-2 generate.

Run from the repository root (needs transformers, in the ``dev`` extra):

    PYTHONPATH=. python benchmarks/bench_decoding.py [--repeats 3] [--sizes notebook baby]

Batch 1, sampling with temperature 0.8, top-k 10, top-p 0.9, from a one-token prompt, with
untrained random weights, at two sizes: the TinyGPT notebook's (2 layers, 4 heads, 64 dims,
context 32) and nanoGPT's baby Shakespeare model (6 layers, 6 heads, 384 dims, context 256),
vocab 65.

Fair comparison: GPT-2 cannot generate past ``n_positions``, so the head-to-head rows
generate ``block_size - 1`` new tokens (31 and 255) from the same one-token prompt in every
implementation. A last row per size times TinyGPT generating ``--long-tokens`` tokens, past
the window (the cache is refilled, see tinygpt.generation). "compiled" rows run the cached
one-token step built by AOTInductor with the token's sampling inside it (``compile=True``,
tinygpt.generation.compiled); the first call, which builds it, is a
warm-up and its time is printed, not counted. Threads: TinyGPT runs with
its default (tinygpt.generation.loop.DECODE_THREADS: one intra-op thread for models under 1M weights
per token, torch's default above) and oneDNN off (torch.backends.mkldnn.flags). HF
generate runs three ways: with torch's defaults, with one thread, and with one thread and
oneDNN off (TinyGPT's settings); the "vs HF" ratios are against the fastest of the three.
Each measurement repeats whole generate calls for at least ``--min-seconds``;
implementations are interleaved within each repeat, so a load change on a shared machine
hits them alike. Reported: the median tokens/s over repeats, and the median over repeats of
each repeat's ratio to the faster HF row of that repeat. Writes
benchmarks/results/decoding.json.
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

from tinygpt.generation import Decoder, generate_ids, intra_op_threads
from tinygpt.models import TinyGPT, TinyGPTConfig

SIZES = {
    "notebook": dict(n_layer=2, n_head=4, n_embd=64, block_size=32),
    "baby": dict(n_layer=6, n_head=6, n_embd=384, block_size=256),
}
VOCAB = 65
TEMPERATURE, TOP_K, TOP_P = 0.8, 10, 0.9
RESULTS = Path(__file__).parent / "results" / "decoding.json"
HF = "HF GPT2LMHeadModel.generate"
HF_1_THREAD = "HF generate, 1 thread"
HF_NO_ONEDNN = "HF generate, 1 thread, no oneDNN"


def tinygpt_runner(
    shape: dict[str, int], new_tokens: int, use_cache: bool = True, compile: bool = False
) -> Callable[[], None]:
    torch.manual_seed(0)
    model = TinyGPT(TinyGPTConfig(vocab_size=VOCAB, **shape)).eval()
    params = Decoder(temperature=TEMPERATURE, top_k=TOP_K, top_p=TOP_P)
    prompt = torch.zeros(1, 1, dtype=torch.long)
    generator = torch.Generator().manual_seed(0)
    return lambda: generate_ids(model, prompt, new_tokens, params, generator, use_cache, compile)


def hf_runner(
    shape: dict[str, int], new_tokens: int, threads: int | None = None, onednn: bool = True
) -> Callable[[], None]:
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=shape["block_size"],
        n_embd=shape["n_embd"],
        n_layer=shape["n_layer"],
        n_head=shape["n_head"],
        bos_token_id=0,
        eos_token_id=None,
    )
    model = GPT2LMHeadModel(config).eval()
    generation = GenerationConfig(
        do_sample=True,
        temperature=TEMPERATURE,
        top_k=TOP_K,
        top_p=TOP_P,
        max_new_tokens=new_tokens,
        pad_token_id=0,
        eos_token_id=None,  # no early stop: every call makes exactly new_tokens tokens
    )
    prompt = torch.zeros(1, 1, dtype=torch.long)
    mask = torch.ones_like(prompt)

    def run() -> None:
        onednn_flag = torch.backends.mkldnn.flags(  # None: leave the other flags alone
            enabled=onednn, deterministic=None, allow_tf32=None, fp32_precision=None
        )
        with intra_op_threads(threads), onednn_flag:
            out = model.generate(prompt, attention_mask=mask, generation_config=generation)
        assert out.shape[1] == 1 + new_tokens, out.shape

    return run


def tokens_per_second(run: Callable[[], None], new_tokens: int, min_seconds: float) -> float:
    calls, start = 0, time.perf_counter()
    while True:
        run()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return calls * new_tokens / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-seconds", type=float, default=0.5)
    parser.add_argument("--long-tokens", type=int, default=500)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    load_at_start = os.getloadavg()
    rows = []
    print(f"{'size':8} {'implementation':33} {'new':>5} {'tokens/s':>16}  {'vs HF':>7}")
    for size in args.sizes:
        shape = SIZES[size]
        window = shape["block_size"] - 1
        runners = {
            ("tinygpt (KV cache)", window): tinygpt_runner(shape, window),
            ("tinygpt (KV cache, compiled)", window): tinygpt_runner(shape, window, compile=True),
            ("tinygpt (no cache)", window): tinygpt_runner(shape, window, use_cache=False),
            (HF, window): hf_runner(shape, window),
            (HF_1_THREAD, window): hf_runner(shape, window, threads=1),
            (HF_NO_ONEDNN, window): hf_runner(shape, window, threads=1, onednn=False),
            ("tinygpt (KV cache)", args.long_tokens): tinygpt_runner(shape, args.long_tokens),
            ("tinygpt (KV cache, compiled)", args.long_tokens): tinygpt_runner(
                shape, args.long_tokens, compile=True
            ),
        }
        for (impl, _), run in runners.items():  # warm up: allocations, lazy imports, compiling
            start = time.perf_counter()
            run()
            print(f"# {size} {impl}: first call {time.perf_counter() - start:.1f} s", flush=True)
        samples: dict[tuple[str, int], list[float]] = {key: [] for key in runners}
        for _ in range(args.repeats):
            for key, run in runners.items():
                samples[key].append(tokens_per_second(run, key[1], args.min_seconds))
        # Each repeat runs every implementation back to back, so a ratio within one repeat
        # cancels the slow load swings of a shared machine; the median ratio is reported.
        hf_rows = (HF, HF_1_THREAD, HF_NO_ONEDNN)
        best_hf = list(map(max, *(samples[(hf, window)] for hf in hf_rows)))
        for (impl, new_tokens), values in samples.items():
            median = statistics.median(values)
            head_to_head = new_tokens == window
            vs_hf = statistics.median(v / hf for v, hf in zip(values, best_hf, strict=True))
            rows.append(
                dict(
                    size=size,
                    **shape,
                    vocab_size=VOCAB,
                    implementation=impl,
                    new_tokens=new_tokens,
                    tokens_per_s=round(median, 1),
                    all_tokens_per_s=[round(v, 1) for v in values],
                    vs_hf=round(vs_hf, 2) if head_to_head else None,
                )
            )
            ratio = f"{vs_hf:6.2f}x" if head_to_head else "      -"
            print(f"{size:8} {impl:33} {new_tokens:5} new tokens {median:9.1f} tok/s  {ratio}")

    import transformers

    report = dict(
        settings=dict(
            batch_size=1,
            prompt_tokens=1,
            temperature=TEMPERATURE,
            top_k=TOP_K,
            top_p=TOP_P,
            repeats=args.repeats,
            min_seconds_per_measurement=args.min_seconds,
        ),
        environment=dict(
            torch=torch.__version__,
            transformers=transformers.__version__,
            threads=torch.get_num_threads(),
            cpus=os.cpu_count(),
            machine=platform.processor() or platform.machine(),
            # Other processes on a small shared machine change every number here.
            load_average_at_start=load_at_start,
            load_average_at_end=os.getloadavg(),
        ),
        results=rows,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
