"""The TinyGPT notebook's decoders compared: diversity and coherence of their text, with spread.

For each row of the notebook's table (:data:`NOTEBOOK_TABLE`) this generates, for each model
(e.g. one recipe trained with 3 seeds) and prompt, a batch of samples and scores only the
continuations. One (model, prompt) batch is a *cell*; each measure is a mean over a cell's
samples, and a row's value the mean over its cells, its spread their standard deviation.
Diversity: the entropy of the distribution each character was drawn from, after temperature and
filtering (:class:`~tinygpt.analysis.likelihood.SampledEntropy`; 0 for greedy), the
self-similarity of a cell's samples (shared character 4-grams; 1 for identical samples), mean
distinct-1/2 over words and the repeated word 4-gram share. Coherence: the share of generated
words found in the training text, and the model's own NLL of the continuation (nats/char).
Outputs: a Markdown table, a PNG with a panel per measure, the samples and every cell as JSON,
and optionally the samples as text in TensorBoard.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from torch.utils.tensorboard import SummaryWriter

from tinygpt.analysis.likelihood import SampledEntropy, mean_nll
from tinygpt.analysis.runs import Run, training_text
from tinygpt.analysis.text_metrics import (
    known_word_share,
    mean_distinct_n,
    repeated_ngram_share,
    self_similarity,
    word_set,
)
from tinygpt.analysis.verdicts import CONCORDANT, DISCORDANT, WITHIN_NOISE, Stat, judge_pairs
from tinygpt.analysis.writing import code_block, jsonable, markdown_table, number, save_figure
from tinygpt.checkpoint import load_model
from tinygpt.generation import (
    Decoder,
    generate_ids,
    intra_op_threads,
    make_generator,
    named_decoder,
)
from tinygpt.generation.sampling import check_int
from tinygpt.models import TinyGPT

DEFAULT_PROMPTS = ("ROMEO:\n", "First Citizen:\n", "KING RICHARD III:\n")
DEFAULT_NUM_SAMPLES = 8  # per prompt and model, decoded as one batch
DEFAULT_MAX_NEW_TOKENS = 400
SEED = 1
SELF_SIMILARITY_CHARS = 4  # character n-grams: a character model's samples share few word pairs


@dataclass(frozen=True)
class NotebookRow:
    """A row of the TinyGPT notebook's table of decoding strategies (:data:`NOTEBOOK_QUOTE`): its
    label there, the notebook's coherence and diversity ratings and recommended use; our short
    name for it, the named decoder it is, and how it decodes (that decoder with the row's
    settings)."""

    label: str
    coherence: str
    diversity: str
    use: str
    name: str
    decoder: str
    params: Decoder


# The TinyGPT notebook's table, quoted as it is written.
NOTEBOOK_QUOTE = """\
| strategy | coherence | diversity | recommended use |
|---|---|---|---|
| greedy | high | low | technical text, consistency |
| temperature 0.5 | high | medium | formal writing |
| temperature 1.5 | low | high | creativity, brainstorming |
| top-k (k=5) | medium | medium | general balance |
| nucleus (p=0.9) | medium | high | creative narrative |
| combined (T 0.8, top-k 10, top-p 0.9) | high | high | best balance observed |
"""
# Each row's short name, and the named decoder with the settings the row changes.
DECODED_AS = (
    ("greedy", "greedy", {}),
    ("temperature 0.5", "temperature", {"temperature": 0.5}),
    ("temperature 1.5", "temperature", {"temperature": 1.5}),
    ("top-k 5", "top_k", {"top_k": 5}),
    ("nucleus 0.9", "nucleus", {}),
    ("combined", "combined", {}),
)
NOTEBOOK_TABLE = tuple(
    NotebookRow(*line.strip("| ").split(" | "), name, decoder, named_decoder(decoder, **settings))
    for line, (name, decoder, settings) in zip(
        NOTEBOOK_QUOTE.splitlines()[2:], DECODED_AS, strict=True
    )
)

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
class DecoderResult:
    """A row's samples (model, prompt, text, entropy) and its cells' measures."""

    row: NotebookRow
    samples: list[dict[str, Any]] = field(default_factory=list)
    cells: list[dict[str, Any]] = field(default_factory=list)  # model, prompt, every metric

    def stat(self, key: str) -> Stat:
        """Mean and standard deviation of ``key`` over the cells."""
        return Stat.of([cell[key] for cell in self.cells])

    @property
    def metrics(self) -> dict[str, float]:
        """Each metric's mean over the cells."""
        return {key: self.stat(key).mean for key in METRICS}


def choose_prompts(model: TinyGPT, text: str) -> list[str]:
    """:data:`DEFAULT_PROMPTS`, each replaced by a line start of ``text`` when the vocabulary
    lacks a character of it (a model trained on another text), so the set stays fixed and
    usable."""
    vocab = set(model.tokenizer.chars)
    spare = (line + "\n" for line in dict.fromkeys(text.splitlines()) if line.strip())
    return [prompt if set(prompt) <= vocab else next(spare, "\n") for prompt in DEFAULT_PROMPTS]


def score_cell(
    texts: Sequence[str], entropies: Sequence[float], model: TinyGPT, vocabulary: set[str]
) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one cell: its samples' continuations and the mean
    sampled entropy of each."""
    with intra_op_threads(1):  # tiny forwards: a second thread costs more than it gains
        nll = Stat.of([mean_nll(model, t) for t in texts if len(t) >= 2]).mean
    return {
        "entropy": Stat.of(entropies).mean,
        "self_similarity": self_similarity(texts, SELF_SIMILARITY_CHARS, unit="char"),
        **{f"mean_distinct_{n}": mean_distinct_n(texts, n) for n in (1, 2)},
        "repeated_4gram": Stat.of([repeated_ngram_share(t, 4) for t in texts]).mean,
        "known_words": Stat.of([known_word_share(t, vocabulary) for t in texts]).mean,
        "nll": nll,
    }


def compare_decoding(
    models: TinyGPT | Sequence[tuple[str, TinyGPT]],
    train_text: str,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
) -> list[DecoderResult]:
    """Per row of :data:`NOTEBOOK_TABLE`, model (one, or ``(label, model)`` pairs) and prompt:
    ``num_samples`` continuations of ``max_new_tokens`` characters, decoded as one batch seeded
    with :data:`SEED`, and their cell's measures."""
    check_int("max_new_tokens", max_new_tokens, 2)
    check_int("num_samples", num_samples, 1)
    if isinstance(models, TinyGPT):
        models = [("model", models)]
    vocabulary = word_set(train_text)
    results = []
    for row in NOTEBOOK_TABLE:
        result = DecoderResult(row)
        for label, model in models:
            for prompt in choose_prompts(model, train_text):
                ids = model.tokenizer.encode(prompt)[None].repeat(num_samples, 1)
                ids = ids.to(model.wte.weight.device)
                entropy = SampledEntropy()
                generator = make_generator(SEED, ids.device)
                seq = generate_ids(
                    model, ids, max_new_tokens, row.params, generator, observe=entropy
                )
                texts = [model.tokenizer.decode(r) for r in seq[:, ids.size(1) :].tolist()]
                entropies = entropy.per_row()
                for i, (text, h) in enumerate(zip(texts, entropies, strict=True)):
                    result.samples.append(
                        {"model": label, "prompt": prompt, "sample": i, "text": text, "entropy": h}
                    )
                cell = score_cell(texts, entropies, model, vocabulary)
                result.cells.append({"model": label, "prompt": prompt, **cell})
        results.append(result)
    return results


def compare_runs(
    runs: Sequence[Run], train_text: str | Path | None = None, **settings: Any
) -> list[DecoderResult]:
    """:func:`compare_decoding` on the best checkpoints of ``runs`` (labelled by seed), with the
    text the first trained on (``train_text`` where given)."""
    models = [(f"seed {r.seed}", load_model(r.checkpoint())) for r in runs]
    return compare_decoding(models, training_text(runs[0].trained_config(), train_text), **settings)


def decoding_table(results: Sequence[DecoderResult]) -> str:
    """One row per decoder: the notebook's rating, and every metric as mean ± std over the
    cells."""
    titles = [title for title, _ in METRICS.values()]
    rows = []
    for r in results:
        rating = f"{r.row.coherence} / {r.row.diversity}"
        rows.append([r.row.name, rating, *(r.stat(key).fmt() for key in METRICS)])
    return markdown_table(
        ["strategy", "the notebook: coherence / diversity", *titles], rows, left=2
    )


# The measures the notebook's ratings are judged by: (axis, sign: +1 where higher is more).
JUDGED_BY = {
    "known_words": ("coherence", +1),
    "nll": ("coherence", -1),
    "entropy": ("diversity", +1),
    "self_similarity": ("diversity", -1),
}


def decoding_verdicts(results: Sequence[DecoderResult]) -> list[dict[str, Any]]:
    """Per measure of :data:`JUDGED_BY`: each pair of strategies the notebook rates differently
    on the measure's axis, judged concordant, discordant or within noise
    (:func:`~tinygpt.analysis.verdicts.judge_pairs`)."""
    rows = []
    for key, (axis, sign) in JUDGED_BY.items():
        stats = {r.row.name: r.stat(key) for r in results}
        oriented = {name: Stat(sign * s.mean, s.std, s.n) for name, s in stats.items()}
        ratings = {r.row.name: getattr(r.row, axis) for r in results}
        rows.append({"measure": key, "axis": axis, **judge_pairs(oriented, ratings)})
    return rows


def verdicts_table(rows: Sequence[dict[str, Any]]) -> str:
    """One row per measure: the pairs the notebook orders, counted by verdict, and the
    discordant ones."""
    header = ["axis: measure", CONCORDANT, DISCORDANT, WITHIN_NOISE, "discordant pairs"]
    table = [
        [
            f"{row['axis']}: {METRICS[row['measure']][0]}",
            *(str(len(row[verdict])) for verdict in (CONCORDANT, DISCORDANT, WITHIN_NOISE)),
            ", ".join(f"{a} > {b}" for a, b in row[DISCORDANT]) or "none",
        ]
        for row in rows
    ]
    return markdown_table(header, table, left=1)


def plot_decoding(results: Sequence[DecoderResult], path: str | Path) -> Path:
    """One panel per metric, one column per decoder: each cell's value a dot, the mean a bar,
    ± one standard deviation over the cells a black line."""
    names = [r.row.name for r in results]
    fig = Figure(figsize=(15, 7.5), dpi=100, layout="constrained")
    axes = fig.subplots(2, 4).ravel()
    jitter = np.random.default_rng(0)
    for ax, (key, (label, higher)) in zip(axes, METRICS.items(), strict=False):
        for i, r in enumerate(results):
            stat = r.stat(key)
            values = [c[key] for c in r.cells if not np.isnan(c[key])]
            ax.bar(i, np.nan_to_num(stat.mean), color=f"C{i}", alpha=0.35)
            ax.errorbar(i, stat.mean, yerr=stat.spread(), color="black", capsize=4, lw=1)
            xs = i + jitter.uniform(-0.22, 0.22, len(values))
            ax.plot(xs, values, "o", color=f"C{i}", ms=3.5, mec="black", mew=0.3)
            top = np.nanmax([stat.mean + stat.spread(), *values, 0.0])
            ax.annotate(
                number(stat.mean, 2),
                (i, top),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                fontsize=7,
            )
        ax.set_title(f"{label}\n(higher = {higher})", fontsize=10)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        # Shares on one 0-1 scale, so panels compare at a glance; room for the labels above.
        ax.set_ylim(0, 1.12 if key in SHARES else ax.get_ylim()[1] * 1.08)
        ax.grid(axis="y", alpha=0.3)
    axes[-1].axis("off")
    n_cells, n_samples = len(results[0].cells), len(results[0].samples)
    fig.suptitle(
        f"Decoding strategies: {n_samples} samples each in {n_cells} cells (model x prompt); "
        "dots: cells, bars: mean, lines: ± std over cells",
        fontsize=11,
    )
    return save_figure(fig, path)


def write_decoding_report(
    results: Sequence[DecoderResult], out_dir: str | Path, log_dir: str | Path | None = None
) -> dict[str, Path]:
    """Write ``decoding.md``, ``decoding.png`` and ``decoding_samples.json`` (every row's
    settings, the notebook's ratings, its metrics, cells and samples) into ``out_dir``; with
    ``log_dir``, the samples as text in TensorBoard there, one tag per decoder."""
    out_dir = Path(out_dir)
    paths = {
        "table": out_dir / "decoding.md",
        "plot": plot_decoding(results, out_dir / "decoding.png"),
        "samples": out_dir / "decoding_samples.json",
    }
    paths["table"].write_text(decoding_table(results))
    rows = [
        {
            "strategy": r.row.name,
            "notebook_label": r.row.label,
            "settings": {k: getattr(r.row.params, k) for k in ("temperature", "top_k", "top_p")},
            "claimed": {"coherence": r.row.coherence, "diversity": r.row.diversity},
            "metrics": {key: {"mean": r.stat(key).mean, "std": r.stat(key).std} for key in METRICS},
            "cells": r.cells,
            "samples": r.samples,
        }
        for r in results
    ]
    paths["samples"].write_text(json.dumps(jsonable(rows), indent=1) + "\n")
    if log_dir is not None:
        with SummaryWriter(str(log_dir)) as writer:
            for r in results:
                parts = []
                for s in r.samples:
                    heading = f"{s['model']}, prompt {s['prompt'].strip()!r}, sample {s['sample']}"
                    parts.append(f"**{heading}**\n\n{code_block(s['prompt'] + s['text'])}")
                tag = "decoding/" + r.row.name.replace(" ", "_")
                writer.add_text(tag, "\n\n".join(parts), global_step=0)
    return paths
