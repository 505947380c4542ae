"""A ``generate.py`` run in TensorBoard: its samples as text, and its row in the HParams dashboard.

The run's ``tb/`` directory gets the samples (Text tab, ``samples/text_summary``) and a
session (:mod:`tinygpt.analysis.hparams`): the decoder settings, prompt, length, seed and
checkpoint as hyperparameters, and as metrics scores of the continuations (prompt left out):
``samples/pooled_distinct_1``, ``_2`` and ``samples/repeated_4gram_share`` (diversity, as a
sweep's ``summary.md`` has it), ``samples/known_word_share`` (generated words found in the
training text, left out with a note when it is not found), ``samples/nll_per_char`` (the
model's own NLL, over the first :data:`NLL_SAMPLES` samples: scoring runs each sample alone)
and ``samples/tokens_per_second``. So ``python generate.py -m decoder=temperature
decoder.temperature=0.5,1.0,1.5`` gives three rows to compare next to the training runs.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from tinygpt.analysis.hparams import HParamValue, flatten, log_session, override_hparams
from tinygpt.analysis.likelihood import mean_nll
from tinygpt.analysis.runs import training_text
from tinygpt.analysis.sweep_summary import continuations_of, diversity
from tinygpt.analysis.text_metrics import known_word_share, word_set
from tinygpt.checkpoint import CHECKPOINT_KEY, load_checkpoint
from tinygpt.errors import DataError
from tinygpt.generation import intra_op_threads
from tinygpt.models import TinyGPT

NLL_SAMPLES = 100
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
    """The run's metrics (see the module docstring); ``vocabulary`` None leaves out the
    known-word share. Empty continuations give ``nan``, which the session leaves out."""
    texts = continuations_of(record)
    with intra_op_threads(1):  # tiny forwards: a second thread costs more than it gains
        nlls = [mean_nll(model, text) for text in texts[:NLL_SAMPLES] if len(text) >= 2]
    metrics = {f"samples/{key}": value for key, value in diversity(record).items()}
    metrics["samples/nll_per_char"] = sum(nlls) / len(nlls) if nlls else math.nan
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
        # Indented by four spaces: a Markdown code block keeps the line breaks and spacing.
        body = "\n".join("    " + line for line in sample.split("\n"))
        parts.append(f"sample {i} of {count}:\n\n{body}")
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
