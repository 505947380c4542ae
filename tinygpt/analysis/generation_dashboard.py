"""A ``generate.py`` run in TensorBoard: its samples as text, and its row in the HParams dashboard.

The run's ``tb/`` directory gets the samples (Text tab, ``samples/text_summary``) and a
session (:mod:`tinygpt.analysis.hparams`): the decoder settings, prompt, length, seed and
checkpoint as hyperparameters, and as metrics (:data:`METRICS`) the measures that separate
decoders in docs/results.md, on the continuations (prompt left out) of the first
:data:`SCORED_SAMPLES` samples: the model's NLL, the sampled entropy and the self-similarity
across samples (char 4-grams); then the known-word share (left out, with a note, when the
training text is not found) and tokens/s. A sweep's ``summary.md`` shows the same values.
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from tinygpt.analysis.hparams import HParamValue, flatten, log_session, override_hparams
from tinygpt.analysis.likelihood import mean_nll, sampled_entropy
from tinygpt.analysis.runs import training_text
from tinygpt.analysis.text_metrics import known_word_share, self_similarity, word_set
from tinygpt.analysis.verdicts import Stat
from tinygpt.analysis.writing import code_block
from tinygpt.checkpoint import CHECKPOINT_KEY, load_checkpoint
from tinygpt.errors import DataError
from tinygpt.generation import Decoder, intra_op_threads
from tinygpt.models import TinyGPT

SCORED_SAMPLES = 100  # the model scores each sample alone, and self-similarity every pair
SELF_SIMILARITY_CHARS = 4  # as the decoding comparison: samples share few word pairs
# metric tag -> title, in a sweep's summary.md
METRICS = {
    "samples/nll_per_char": "NLL (nats/char)",
    "samples/sampled_entropy": "sampled entropy (nats/char)",
    "samples/self_similarity": "self-similarity (char 4-grams)",
    "samples/known_word_share": "known-word share",
    "samples/tokens_per_second": "tokens/s",
}
TEXT_TAG = "samples"  # torch's SummaryWriter.add_text appends "/text_summary"
# The generate.yaml keys that shape the samples.
GENERATION_SECTIONS = (
    "decoder",
    "prompt",
    "prompt_file",
    "max_new_tokens",
    "num_samples",
    "seed",
    "use_cache",
    "compile",
)


def generation_hparams(record: dict[str, Any]) -> dict[str, HParamValue]:
    """A generate run's hyperparameters, from its ``samples.json`` record."""
    config = record["config"]
    settings = flatten({key: config[key] for key in GENERATION_SECTIONS if key in config})
    return {
        "kind": "generate",
        "ckpt_path": str(record["ckpt_path"]),
        **settings,
        **override_hparams(config, record["overrides"]),
    }


def generation_metrics(
    record: dict[str, Any], model: TinyGPT, vocabulary: set[str] | None
) -> dict[str, float | None]:
    """The run's :data:`METRICS`; ``vocabulary`` None leaves out the known-word share. Too few
    characters or samples give ``nan``, which the session leaves out."""
    texts = [sample[len(record["prompt"]) :] for sample in record["samples"]]  # prompt left out
    scored = texts[:SCORED_SAMPLES]
    decoder = Decoder(**{f.name: record["decoder"][f.name] for f in fields(Decoder)})
    with intra_op_threads(1):  # tiny forwards: a second thread costs more than it gains
        nll = Stat.of([mean_nll(model, text) for text in scored if len(text) >= 2])
        entropy = Stat.of([sampled_entropy(model, t, decoder) for t in scored if len(t) >= 2])
    metrics = {
        "samples/nll_per_char": nll.mean,
        "samples/sampled_entropy": entropy.mean,
        "samples/self_similarity": self_similarity(scored, SELF_SIMILARITY_CHARS, unit="char"),
    }
    if vocabulary is not None:
        metrics["samples/known_word_share"] = known_word_share(texts, vocabulary)
    metrics["samples/tokens_per_second"] = record["tokens_per_s"]
    return metrics


def training_vocabulary(ckpt_path: str | Path) -> set[str] | None:
    """The words of the checkpoint's training text; None, with a note, when it is not found."""
    run_config = load_checkpoint(ckpt_path)[CHECKPOINT_KEY].get("config") or {}
    try:
        return word_set(training_text(run_config))
    except DataError as exc:
        print(f"note: known-word share not logged: {exc}", file=sys.stderr, flush=True)
        return None


def samples_markdown(record: dict[str, Any]) -> str:
    """The samples for the Text tab: the decoder, then each sample as a code block."""
    decoder = record["decoder"]
    settings = ", ".join(f"{k}={v}" for k, v in decoder.items() if k != "name")
    parts = [f"decoder **{decoder.get('name')}** ({settings})"]
    count = len(record["samples"])
    for i, sample in enumerate(record["samples"], start=1):
        parts.append(f"sample {i} of {count}:\n\n{code_block(sample)}")
    return "\n\n".join(parts)


def log_generation_run(out_dir: str | Path, record: dict[str, Any], model: TinyGPT) -> Path:
    """Log a finished generate run (its ``samples.json`` record, the model that wrote it) to
    ``<out_dir>/tb``; returns that directory."""
    from torch.utils.tensorboard import SummaryWriter

    log_dir = Path(out_dir) / "tb"
    metrics = generation_metrics(record, model, training_vocabulary(record["ckpt_path"]))
    with SummaryWriter(str(log_dir)) as writer:
        writer.add_text(TEXT_TAG, samples_markdown(record), global_step=0)
        log_session(writer, generation_hparams(record), metrics)
    return log_dir
