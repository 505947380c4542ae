"""Decoding strategies compared: diversity and coherence of generated text, with their spread.

For each strategy of the TinyGPT notebook's table (greedy, temperature 0.5 and 1.5, top-k 5,
nucleus 0.9, and temperature 0.8 + top-k 10 + top-p 0.9 combined: ``NOTEBOOK_STRATEGIES`` of
:mod:`tinygpt.generation.strategies`) this generates, for each model (e.g. the same recipe
trained with 3 seeds) and each prompt, a batch of ``num_samples`` samples, and scores only the
generated continuations, never the prompt. One (model, prompt) batch is a *cell*; each measure
is a mean over a cell's samples, and a strategy's value is the mean over its cells, its spread
the standard deviation over them (prompts x models):

* diversity: the entropy of the distribution each character was actually drawn from, after
  temperature and filtering (:class:`~tinygpt.analysis.likelihood.SampledEntropy`, nats per
  character; 0 for greedy); the self-similarity of a cell's samples, how much of each sample's
  character 4-grams the others repeat
  (:func:`~tinygpt.analysis.text_metrics.self_similarity`; 1 for identical samples); mean
  distinct-1 and distinct-2 over words (:func:`~tinygpt.analysis.text_metrics.mean_distinct_n`;
  distinct-2 is near 1 for any sampled text of a few hundred characters) and the share of
  repeated word 4-grams within a sample;
* coherence: the share of generated words found in the training text's word list
  (:func:`~tinygpt.analysis.text_metrics.known_word_share`), and the mean negative
  log-likelihood of the continuation under the model itself
  (:func:`~tinygpt.analysis.likelihood.mean_nll`, nats/char; the continuation is scored on its
  own, without the prompt as context).

Outputs: a Markdown table, a PNG with one panel per measure (every cell a dot, the mean a bar,
± one standard deviation a line), the samples and every cell's values as JSON, and optionally
the samples as text in TensorBoard. As a command, for one checkpoint:

    python -m tinygpt.decoding_report CKPT [--out DIR] [--train-text FILE] [--tb-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from tinygpt.analysis.likelihood import SampledEntropy, mean_nll
from tinygpt.analysis.tables import markdown_table
from tinygpt.analysis.text_metrics import (
    known_word_share,
    mean_distinct_n,
    repeated_ngram_share,
    self_similarity,
    word_set,
)
from tinygpt.analysis.verdicts import Stat
from tinygpt.checkpoint import CHECKPOINT_KEY, load_checkpoint, load_model
from tinygpt.cli.errors import user_errors
from tinygpt.cli.paths import root_dir
from tinygpt.data.text import read_text
from tinygpt.errors import ConfigError, DataError
from tinygpt.generation import generate_ids, intra_op_threads, make_generator
from tinygpt.generation.sampling import check_int
from tinygpt.generation.strategies import NOTEBOOK_STRATEGIES, Strategy
from tinygpt.models import TinyGPT

DEFAULT_PROMPTS = ("ROMEO:\n", "First Citizen:\n", "KING RICHARD III:\n")
DEFAULT_NUM_SAMPLES = 8  # per prompt and model, decoded as one batch
DEFAULT_MAX_NEW_TOKENS = 400
DEFAULT_SEED = 1
SELF_SIMILARITY_CHARS = 4  # character n-grams: a character model's samples share few word pairs

# metric key -> (column title, what a higher value means)
METRICS = {
    "entropy": ("sampled entropy (nats/char)", "more choice at each step"),
    "self_similarity": ("self-similarity (char 4-grams)", "samples repeat each other"),
    "mean_distinct_1": ("mean distinct-1", "more diverse words"),
    "mean_distinct_2": ("mean distinct-2", "more diverse word pairs"),
    "repeated_4gram": ("repeated 4-gram share", "more repetitive"),
    "known_words": ("known-word share", "more real words"),
    "nll": ("NLL (nats/char)", "less likely under the model"),
}
SHARES = ("self_similarity", "mean_distinct_1", "mean_distinct_2", "repeated_4gram", "known_words")


@dataclass
class StrategyResult:
    """A strategy's samples (model, prompt, text, entropy) and its cells' measures."""

    strategy: Strategy
    samples: list[dict[str, Any]] = field(default_factory=list)
    cells: list[dict[str, Any]] = field(default_factory=list)  # model, prompt, every metric

    def stat(self, key: str) -> Stat:
        """Mean and standard deviation of ``key`` over the cells."""
        return Stat.of([cell[key] for cell in self.cells])

    @property
    def metrics(self) -> dict[str, float]:
        """Each metric's mean over the cells."""
        return {key: self.stat(key).mean for key in METRICS}


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def training_text(run_config: dict[str, Any], explicit: str | Path | None = None) -> str:
    """The text a run trained on: ``explicit`` if given, else ``data.path`` or the cached
    TinyShakespeare (``data.cache_dir/tinyshakespeare.txt``) from the run's resolved config; cut
    to ``data.max_chars`` where the run set it, as its DataModule cut it.

    A relative path is looked up from the working directory, then from the project root
    (:func:`tinygpt.cli.paths.root_dir`, where runs keep data/ by default).
    """
    data = run_config.get("data") or {}
    max_chars = data.get("max_chars")
    if explicit is not None:
        return read_text(explicit)[:max_chars]
    if data.get("path"):
        path = Path(data["path"])
    else:
        path = Path(data.get("cache_dir") or "data") / "tinyshakespeare.txt"
    candidates = [path] if path.is_absolute() else [path, Path(root_dir()) / path]
    for candidate in candidates:
        if candidate.is_file():
            return read_text(candidate)[:max_chars]
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


def score_cell(
    texts: Sequence[str], entropies: Sequence[float], model: TinyGPT, vocabulary: set[str]
) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one cell: its samples' continuations and the mean
    sampled entropy of each."""
    with intra_op_threads(1):  # tiny forwards: a second thread costs more than it gains
        nll = _mean([mean_nll(model, t) if len(t) >= 2 else math.nan for t in texts])
    return {
        "entropy": _mean(entropies),
        "self_similarity": self_similarity(texts, SELF_SIMILARITY_CHARS, unit="char"),
        **{f"mean_distinct_{n}": mean_distinct_n(texts, n) for n in (1, 2)},
        "repeated_4gram": _mean([repeated_ngram_share(t, 4) for t in texts]),
        "known_words": _mean([known_word_share(t, vocabulary) for t in texts]),
        "nll": nll,
    }


def compare_decoding(
    models: TinyGPT | Sequence[tuple[str, TinyGPT]],
    train_text: str,
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    strategies: Sequence[Strategy] = NOTEBOOK_STRATEGIES,
    seed: int = DEFAULT_SEED,
) -> list[StrategyResult]:
    """Per strategy, model (one, or ``(label, model)`` pairs) and prompt: ``num_samples``
    continuations of ``max_new_tokens`` characters, decoded as one batch seeded with ``seed``,
    and their cell's measures."""
    check_int("max_new_tokens", max_new_tokens, 2)
    check_int("num_samples", num_samples, 1)
    if isinstance(models, TinyGPT):
        models = [("model", models)]
    if not models:
        raise ConfigError("compare_decoding needs at least one model")
    vocabulary = word_set(train_text)
    results = []
    for strategy in strategies:
        result = StrategyResult(strategy)
        for label, model in models:
            for prompt in choose_prompts(model, train_text, prompts):
                ids = model.tokenizer.encode(prompt)[None].repeat(num_samples, 1)
                ids = ids.to(model.wte.weight.device)
                entropy = SampledEntropy()
                generator = make_generator(seed, ids.device)
                seq = generate_ids(
                    model, ids, max_new_tokens, strategy.params, generator, observe=entropy
                )
                texts = [model.tokenizer.decode(row) for row in seq[:, ids.size(1) :].tolist()]
                entropies = entropy.per_row()
                for i, (text, h) in enumerate(zip(texts, entropies, strict=True)):
                    result.samples.append(
                        {"model": label, "prompt": prompt, "sample": i, "text": text, "entropy": h}
                    )
                cell = score_cell(texts, entropies, model, vocabulary)
                result.cells.append({"model": label, "prompt": prompt, **cell})
        results.append(result)
    return results


def _cell(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def strategies_table(results: Sequence[StrategyResult]) -> str:
    """One row per strategy: the notebook's rating, and every metric as mean ± std over the
    cells."""
    titles = [title for title, _ in METRICS.values()]
    rows = [
        [r.strategy.name, r.strategy.claim, *(r.stat(key).fmt() for key in METRICS)]
        for r in results
    ]
    return markdown_table(
        ["strategy", "the notebook: coherence / diversity", *titles], rows, left=2
    )


def plot_metrics(results: Sequence[StrategyResult], path: str | Path, title: str = "") -> Path:
    """One panel per metric, one column per strategy: each cell's value a dot, the mean a bar,
    ± one standard deviation over the cells a black line."""
    names = [r.strategy.name for r in results]
    fig = Figure(figsize=(15, 7.5), dpi=100, layout="constrained")
    axes = fig.subplots(2, 4).ravel()
    jitter = np.random.default_rng(0)
    for ax, (key, (label, higher)) in zip(axes, METRICS.items(), strict=False):
        for i, r in enumerate(results):
            stat = r.stat(key)
            values = [c[key] for c in r.cells if not math.isnan(c[key])]
            ax.bar(i, 0.0 if math.isnan(stat.mean) else stat.mean, color=f"C{i}", alpha=0.35)
            ax.errorbar(i, stat.mean, yerr=stat.spread(), color="black", capsize=4, lw=1)
            xs = i + jitter.uniform(-0.22, 0.22, len(values))
            ax.plot(xs, values, "o", color=f"C{i}", ms=3.5, mec="black", mew=0.3)
            tops = [v for v in (stat.mean + stat.spread(), *values) if not math.isnan(v)]
            ax.annotate(
                _cell(stat.mean, 2),
                (i, max(tops, default=0.0)),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                fontsize=7,
            )
        ax.set_title(f"{label}\n(higher = {higher})", fontsize=10)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        if key in SHARES:  # shares on one 0-1 scale, so panels compare at a glance
            ax.set_ylim(0, 1.12)
        else:
            ax.set_ylim(0, ax.get_ylim()[1] * 1.08)  # room for the labels
        ax.grid(axis="y", alpha=0.3)
    axes[-1].axis("off")
    n_cells = len(results[0].cells) if results else 0
    n_samples = len(results[0].samples) if results else 0
    fig.suptitle(
        title
        or f"Decoding strategies: {n_samples} samples each in {n_cells} cells (model x prompt); "
        "dots: cells, bars: mean, lines: ± std over cells",
        fontsize=11,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _number(value: float) -> float | None:
    return None if value is None or math.isnan(value) else value


def to_json(results: Sequence[StrategyResult]) -> list[dict[str, Any]]:
    return [
        {
            "strategy": r.strategy.name,
            "notebook_label": r.strategy.notebook_label,
            "settings": r.strategy.table_settings(),
            "claimed": {"coherence": r.strategy.claimed[0], "diversity": r.strategy.claimed[1]},
            "metrics": {
                key: {"mean": _number(r.stat(key).mean), "std": _number(r.stat(key).std)}
                for key in METRICS
            },
            "cells": [
                {k: _number(v) if isinstance(v, float) else v for k, v in c.items()}
                for c in r.cells
            ],
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
                heading = f"{s['model']}, prompt {s['prompt'].strip()!r}, sample {s['sample']}"
                parts.append(f"**{heading}**\n\n{body}")
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
    paths["table"].write_text(strategies_table(results))
    plot_metrics(results, paths["plot"], title)
    paths["samples"].write_text(json.dumps(to_json(results), indent=1) + "\n")
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
    p.add_argument(
        "--num-samples", type=int, default=DEFAULT_NUM_SAMPLES, help="samples per prompt"
    )
    p.add_argument("--tb-dir", help="also log the samples as text to this TensorBoard dir")
    args = p.parse_args(argv)
    with user_errors():
        model = load_model(args.checkpoint)
        run_config = load_checkpoint(args.checkpoint)[CHECKPOINT_KEY].get("config") or {}
        text = training_text(run_config, args.train_text)
        results = compare_decoding(
            model, text, num_samples=args.num_samples, max_new_tokens=args.max_new_tokens
        )
        paths = write_decoding_report(results, args.out, args.tb_dir)
    print(strategies_table(results), end="")
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
