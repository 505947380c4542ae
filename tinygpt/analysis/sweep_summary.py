"""A Hydra callback that gathers every job's samples of a multirun into one summary.

Each ``generate.py`` job writes ``samples.json`` into its own directory; at the end of the
sweep this writes ``summary.json`` (all jobs) and ``summary.md`` (a table) into the sweep dir,
with each job's diversity measured on the generated continuations (prompt left out), so a sweep
over temperatures reads as numbers: pooled distinct-1/2 over words (the n-grams of all the job's
samples pooled, :func:`~tinygpt.analysis.text_metrics.distinct_n`) and
the mean share of repeated word 4-grams within a sample.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from tinygpt.analysis.text_metrics import distinct_n, repeated_ngram_share

SAMPLES_FILE = "samples.json"
PREVIEW_CHARS = 60


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every job's ``samples.json`` under ``sweep_dir``, in job-number order."""
    jobs = []
    for path in sweep_dir.glob(f"*/{SAMPLES_FILE}"):
        record = json.loads(path.read_text())
        record["job_dir"] = path.parent.name
        record["diversity"] = diversity(record)
        jobs.append(record)
    return sorted(jobs, key=lambda job: (len(job["job_dir"]), job["job_dir"]))


def continuations_of(record: dict[str, Any]) -> list[str]:
    """Each sample of a ``samples.json`` record without its prompt (``prompt=`` or the text of
    ``prompt_file=``)."""
    prompt = record["prompt"]
    return [sample[len(prompt) :] for sample in record["samples"]]


def diversity(record: dict[str, Any]) -> dict[str, float]:
    continuations = continuations_of(record)
    repeated = [repeated_ngram_share(text, 4) for text in continuations]
    return {
        "pooled_distinct_1": round(distinct_n(continuations, 1), 4),
        "pooled_distinct_2": round(distinct_n(continuations, 2), 4),
        "repeated_4gram_share": round(sum(repeated) / max(len(repeated), 1), 4),
    }


def markdown(jobs: list[dict[str, Any]]) -> str:
    lines = [
        "| job | overrides | tokens/s | pooled distinct-1 | pooled distinct-2 | repeated 4-grams "
        "| sample |",
        "|---|---|---|---|---|---|---|",
    ]
    for job in jobs:
        preview = job["samples"][0][:PREVIEW_CHARS] if job["samples"] else ""
        preview = preview.replace("\n", "\\n").replace("|", "\\|")
        overrides = " ".join(job["overrides"]) or "(none)"
        d = job["diversity"]
        lines.append(
            f"| {job['job_dir']} | {overrides} | {job['tokens_per_s']} | "
            f"{d['pooled_distinct_1']} | {d['pooled_distinct_2']} | {d['repeated_4gram_share']} | "
            f"{preview} |"
        )
    return "\n".join(lines) + "\n"


class SweepSummary(Callback):
    """Writes ``summary.json`` and ``summary.md`` into the sweep directory after a multirun."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = collect(sweep_dir)
        (sweep_dir / "summary.json").write_text(json.dumps(jobs, indent=2) + "\n")
        (sweep_dir / "summary.md").write_text(markdown(jobs))
