"""Decoding strategies compared on one checkpoint: diversity and coherence of generated text.

For each strategy of the TinyGPT notebook's table (greedy, temperature 0.5 and 1.5, top-k 5,
nucleus 0.9, and temperature 0.8 + top-k 10 + top-p 0.9 combined: ``NOTEBOOK_STRATEGIES`` of
:mod:`tinygpt.generation.strategies`, built on the named decoders generate.py uses) this
generates a fixed set of samples (prompts x seeds) and scores only the generated
continuation, never the prompt:

* diversity: mean distinct-1/2/3 over words
  (:func:`~tinygpt.analysis.text_metrics.mean_distinct_n`) and the share of repeated word
  4-grams, each computed per sample and averaged over the samples (so a deterministic strategy,
  whose seeds repeat the same text, is not scored down for repeating itself across seeds);
* coherence: the share of generated words found in the training text's word list
  (:func:`~tinygpt.analysis.text_metrics.known_word_share`), and the mean negative
  log-likelihood of the continuation under the model itself
  (:func:`~tinygpt.analysis.likelihood.mean_nll`, nats/char; the continuation is scored on its
  own, without the prompt as context).

Outputs: a Markdown table, a PNG with one panel per metric, the samples as JSON, and optionally
the samples as text in TensorBoard. As a command, for one checkpoint:

    python -m tinygpt.decoding_report CKPT [--out DIR] [--train-text FILE] [--tb-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from tinygpt.analysis.likelihood import mean_nll
from tinygpt.analysis.text_metrics import (
    known_word_share,
    mean_distinct_n,
    repeated_ngram_share,
    word_set,
)
from tinygpt.checkpoint import CHECKPOINT_KEY, load_checkpoint, load_model
from tinygpt.cli.errors import user_errors
from tinygpt.cli.paths import root_dir
from tinygpt.data.text import read_text
from tinygpt.errors import ConfigError, DataError
from tinygpt.generation import generate, intra_op_threads
from tinygpt.generation.strategies import NOTEBOOK_STRATEGIES, Strategy
from tinygpt.models import TinyGPT

DEFAULT_PROMPTS = ("ROMEO:\n", "First Citizen:\n", "KING RICHARD III:\n")
DEFAULT_SEEDS = (1, 2)
DEFAULT_MAX_NEW_TOKENS = 300


# metric key -> (column title, what a higher value means)
METRICS = {
    "mean_distinct_1": ("mean distinct-1", "more diverse"),
    "mean_distinct_2": ("mean distinct-2", "more diverse"),
    "mean_distinct_3": ("mean distinct-3", "more diverse"),
    "repeated_4gram": ("repeated 4-gram share", "more repetitive"),
    "known_words": ("known-word share", "more coherent"),
    "nll": ("NLL (nats/char)", "less likely under the model"),
}
SHARES = ("mean_distinct_1", "mean_distinct_2", "mean_distinct_3", "repeated_4gram", "known_words")


@dataclass
class StrategyResult:
    strategy: Strategy
    samples: list[dict[str, Any]] = field(default_factory=list)  # prompt, seed, continuation
    metrics: dict[str, float] = field(default_factory=dict)


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def training_text(run_config: dict[str, Any], explicit: str | Path | None = None) -> str:
    """The text a run trained on: ``explicit`` if given, else ``data.path`` or the cached
    TinyShakespeare (``data.cache_dir/tinyshakespeare.txt``) from the run's resolved config.

    A relative path is looked up from the working directory, then from the project root
    (:func:`tinygpt.cli.paths.root_dir`, where runs keep data/ by default).
    """
    if explicit is not None:
        return read_text(explicit)
    data = run_config.get("data") or {}
    if data.get("path"):
        path = Path(data["path"])
    else:
        path = Path(data.get("cache_dir") or "data") / "tinyshakespeare.txt"
    candidates = [path] if path.is_absolute() else [path, Path(root_dir()) / path]
    for candidate in candidates:
        if candidate.is_file():
            return read_text(candidate)
    raise DataError(
        f"the training text {path} was not found (from the run's data config); "
        "pass it explicitly with --train-text"
    )


def validation_text(text: str, run_config: dict[str, Any]) -> str:
    """The validation split of ``text``: characters after ``data.train_fraction`` (default 0.9)."""
    fraction = (run_config.get("data") or {}).get("train_fraction", 0.9)
    return text[int(fraction * len(text)) :]


def choose_prompts(
    model: TinyGPT, text: str, prompts: Sequence[str] = DEFAULT_PROMPTS
) -> list[str]:
    """``prompts``, each replaced by a line start of ``text`` when the vocabulary lacks a
    character of it (a model trained on another text), so the set stays fixed and usable."""
    vocab = set(model.tokenizer.chars)
    lines = [line + "\n" for line in dict.fromkeys(text.splitlines()) if line.strip()]
    spare = iter(lines)
    chosen = []
    for prompt in prompts:
        if not set(prompt) <= vocab:
            prompt = next(spare, "\n")
        chosen.append(prompt)
    return chosen


def score(continuations: Sequence[str], model: TinyGPT, vocabulary: set[str]) -> dict[str, float]:
    """Every metric of :data:`METRICS`, each the mean over the continuations."""
    with intra_op_threads(1):  # tiny forwards: a second thread costs more than it gains
        nll = _mean([mean_nll(model, c) if len(c) >= 2 else math.nan for c in continuations])
    return {
        **{f"mean_distinct_{n}": mean_distinct_n(continuations, n) for n in (1, 2, 3)},
        "repeated_4gram": _mean([repeated_ngram_share(c, 4) for c in continuations]),
        "known_words": _mean([known_word_share(c, vocabulary) for c in continuations]),
        "nll": nll,
    }


def compare_decoding(
    model: TinyGPT,
    train_text: str,
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    strategies: Sequence[Strategy] = NOTEBOOK_STRATEGIES,
) -> list[StrategyResult]:
    """Generate ``len(prompts) * len(seeds)`` samples per strategy and score them."""
    if max_new_tokens < 2:
        raise ConfigError(f"max_new_tokens must be at least 2, got {max_new_tokens}")
    vocabulary = word_set(train_text)
    prompts = choose_prompts(model, train_text, prompts)
    results = []
    for strategy in strategies:
        result = StrategyResult(strategy)
        for prompt in prompts:
            for seed in seeds:
                settings = asdict(strategy.params)
                text = generate(model, prompt, max_new_tokens, seed=seed, **settings)
                continuation = text[len(prompt) :]
                result.samples.append({"prompt": prompt, "seed": seed, "text": continuation})
        result.metrics = score([s["text"] for s in result.samples], model, vocabulary)
        results.append(result)
    return results


def _cell(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def markdown_table(results: Sequence[StrategyResult]) -> str:
    """One row per strategy: its settings, the notebook's rating, and every metric."""
    titles = [title for title, _ in METRICS.values()]
    lines = [
        "| strategy | notebook's claim (coherence / diversity) | " + " | ".join(titles) + " |",
        "|---|---|" + "---:|" * len(titles),
    ]
    for r in results:
        claim = " / ".join(r.strategy.claimed)
        cells = " | ".join(_cell(r.metrics[key]) for key in METRICS)
        lines.append(f"| {r.strategy.name} | {claim} | {cells} |")
    return "\n".join(lines) + "\n"


def plot_metrics(results: Sequence[StrategyResult], path: str | Path, title: str = "") -> Path:
    """One panel per metric, one bar per strategy, each bar labelled with its value."""
    names = [r.strategy.name for r in results]
    colors = [f"C{i}" for i in range(len(results))]
    fig = Figure(figsize=(12, 6.5), dpi=100, layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    for ax, (key, (label, higher)) in zip(axes, METRICS.items(), strict=True):
        values = [r.metrics[key] for r in results]
        heights = [0.0 if math.isnan(v) else v for v in values]
        bars = ax.bar(range(len(names)), heights, color=colors)
        ax.bar_label(bars, labels=[_cell(v, 2) for v in values], fontsize=8, padding=2)
        ax.set_title(f"{label}\n(higher = {higher})", fontsize=10)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        if key in SHARES:  # shares on one 0-1 scale, so panels compare at a glance
            ax.set_ylim(0, 1.12)
        else:
            ax.set_ylim(0, max(max(heights, default=0.0) * 1.15, 1e-9))
        ax.grid(axis="y", alpha=0.3)
    n = len(results[0].samples) if results else 0
    fig.suptitle(
        title
        or f"Decoding strategies, mean over {n} samples each: diversity (mean distinct-n, repeated "
        "4-grams) and coherence (known words, NLL)",
        fontsize=11,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def to_json(results: Sequence[StrategyResult]) -> list[dict[str, Any]]:
    return [
        {
            "strategy": r.strategy.name,
            "settings": r.strategy.table_settings(),
            "claimed": {"coherence": r.strategy.claimed[0], "diversity": r.strategy.claimed[1]},
            "metrics": {k: (None if math.isnan(v) else v) for k, v in r.metrics.items()},
            "samples": r.samples,
        }
        for r in results
    ]


def log_samples(results: Sequence[StrategyResult], log_dir: str | Path) -> None:
    """The samples as text in TensorBoard, one tag per strategy (``decoding/<strategy>``)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(log_dir))
    try:
        for r in results:
            parts = []
            for s in r.samples:
                body = "\n".join("    " + line for line in (s["prompt"] + s["text"]).splitlines())
                parts.append(f"**prompt {s['prompt'].strip()!r}, seed {s['seed']}**\n\n{body}")
            tag = "decoding/" + r.strategy.name.replace(" ", "_")
            writer.add_text(tag, "\n\n".join(parts), global_step=0)
    finally:
        writer.close()


def write_decoding_report(
    results: Sequence[StrategyResult],
    out_dir: str | Path,
    log_dir: str | Path | None = None,
    title: str = "",
) -> dict[str, Path]:
    """Write ``decoding.md``, ``decoding.png`` and ``decoding_samples.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "table": out_dir / "decoding.md",
        "plot": out_dir / "decoding.png",
        "samples": out_dir / "decoding_samples.json",
    }
    paths["table"].write_text(markdown_table(results))
    plot_metrics(results, paths["plot"], title)
    paths["samples"].write_text(json.dumps(to_json(results), indent=2) + "\n")
    if log_dir is not None:
        log_samples(results, log_dir)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tinygpt.decoding_report",
        description="Compare decoding strategies on one checkpoint.",
    )
    p.add_argument("checkpoint")
    p.add_argument("--out", default="decoding_report", help="output folder (default: %(default)s)")
    p.add_argument("--train-text", help="the training text file (default: from the checkpoint)")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    p.add_argument("--tb-dir", help="also log the samples as text to this TensorBoard dir")
    args = p.parse_args(argv)
    with user_errors():
        model = load_model(args.checkpoint)
        run_config = load_checkpoint(args.checkpoint)[CHECKPOINT_KEY].get("config") or {}
        text = training_text(run_config, args.train_text)
        results = compare_decoding(model, text, max_new_tokens=args.max_new_tokens)
        paths = write_decoding_report(results, args.out, args.tb_dir)
    print(markdown_table(results), end="")
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
