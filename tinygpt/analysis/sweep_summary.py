"""A Hydra callback that gathers a ``generate.py -m`` sweep into one summary.

Each job writes ``samples.json`` and logs its measures to its own ``tb/``
(:mod:`tinygpt.analysis.generation_dashboard`). At the end of the sweep this writes
``summary.json`` (every job's record, with its measures read back from ``tb/``) and
``summary.md`` (a table) into the sweep directory. The measures are those that separate decoding
strategies in docs/results.md: the model's NLL of the continuations, the sampled entropy and
the self-similarity across samples; pooled distinct-n would read 1.0 at any temperature.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from tinygpt.analysis.generation_dashboard import METRICS
from tinygpt.analysis.plots import read_scalars
from tinygpt.analysis.writing import markdown_table, number

SAMPLES_FILE = "samples.json"
PREVIEW_CHARS = 60


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every job's ``samples.json`` under ``sweep_dir`` with its logged ``measures`` (by
    metric tag), in job-number order."""
    jobs = []
    for path in sweep_dir.glob(f"*/{SAMPLES_FILE}"):
        record = json.loads(path.read_text())
        record["job_dir"] = path.parent.name
        logged = read_scalars(path.parent / "tb")
        record["measures"] = {tag: logged[tag][-1][1] for tag in METRICS if tag in logged}
        jobs.append(record)
    return sorted(jobs, key=lambda job: (len(job["job_dir"]), job["job_dir"]))


def markdown(jobs: list[dict[str, Any]]) -> str:
    """One row per job: its overrides, measures ("n/a" where not logged) and a sample's start."""
    rows = []
    for job in jobs:
        preview = job["samples"][0][:PREVIEW_CHARS] if job["samples"] else ""
        preview = preview.replace("\n", "\\n").replace("|", "\\|")
        measures = [number(job["measures"].get(tag)) for tag in METRICS]
        rows.append([job["job_dir"], " ".join(job["overrides"]) or "(none)", *measures, preview])
    return markdown_table(["job", "overrides", *METRICS.values(), "sample"], rows)


class SweepSummary(Callback):
    """Writes ``summary.json`` and ``summary.md`` into the sweep directory after a multirun."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = collect(sweep_dir)
        (sweep_dir / "summary.json").write_text(json.dumps(jobs, indent=2) + "\n")
        (sweep_dir / "summary.md").write_text(markdown(jobs))
