"""Finished runs, read back: a run directory's summary.json and Hydra files, its best checkpoint
and the config that trained it, the text it trained on, the expert load it logged, and the
attention per head of its best checkpoint."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from tinygpt.analysis.attention import head_statistics
from tinygpt.analysis.moe import expert_shares
from tinygpt.analysis.plots import Series, read_scalars
from tinygpt.checkpoint import CHECKPOINT_KEY, load_checkpoint, load_model
from tinygpt.data.text import read_text
from tinygpt.errors import DataError
from tinygpt.models import TinyGPT

# Overrides that never make runs different models: seeds and where things are read or written
# (these, and hydra.* and paths.* keys).
NEUTRAL_KEYS = ("seed", "data.path", "data.cache_dir", "ckpt_path", "trainer.default_root_dir")


@dataclass
class Run:
    """A finished run: its directory, summary.json, and Hydra's config.yaml and overrides.yaml."""

    dir: Path
    summary: dict[str, Any]
    config: dict[str, Any]
    overrides: list[str]

    def load_model(self) -> TinyGPT:
        """Its best checkpoint's model (else its last), ready for ``generate``."""
        return load_model(self.checkpoint())

    def scalars(self) -> dict[str, Series]:
        """Every logged scalar: tag -> [(step, value), ...], as its loggers wrote them."""
        return read_scalars(self.dir)

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    @property
    def ffn(self) -> str:
        return str((self.config.get("model") or {}).get("ffn", "dense"))

    @property
    def model_overrides(self) -> tuple[str, ...]:
        """The overrides that may change the model or its training, sorted."""
        kept = []
        for override in self.overrides:
            key = override.split("=", 1)[0].lstrip("+~")
            if key not in NEUTRAL_KEYS and not key.startswith(("hydra.", "paths.")):
                kept.append(override)
        return tuple(sorted(kept))

    @property
    def job(self) -> frozenset[str]:
        """Its overrides, ``ckpt_path`` left out: a resumed job is the same job."""
        return frozenset(o for o in self.overrides if not o.startswith("ckpt_path="))

    def checkpoint(self) -> Path:
        """Its ``best.ckpt``, else its ``last.ckpt``."""
        for name in ("best.ckpt", "last.ckpt"):
            path = self.dir / "checkpoints" / name
            if path.is_file():
                return path
        raise DataError(f"{self.dir}: no checkpoints/best.ckpt or last.ckpt")

    def trained_config(self) -> dict[str, Any]:
        """The resolved config its checkpoint holds (else its ``.hydra/config.yaml``)."""
        return load_checkpoint(self.checkpoint())[CHECKPOINT_KEY].get("config") or self.config

    def head_statistics(self, train_text: str | Path | None = None) -> dict[str, torch.Tensor]:
        """:func:`~tinygpt.analysis.attention.head_statistics` of its best checkpoint on its
        validation text (of ``train_text`` where given)."""
        config = self.trained_config()
        text = training_text(config, train_text)
        fraction = (config.get("data") or {}).get("train_fraction", 0.9)  # validation: after it
        return head_statistics(self.load_model(), text[int(fraction * len(text)) :])


def load_run(path: Path) -> Run:
    """The run in ``path``; a DataError where its summary.json or Hydra files are unreadable."""
    hydra = {"config.yaml": {}, "overrides.yaml": []}
    try:
        summary = json.loads((path / "summary.json").read_text())
        for name in hydra:
            if (path / ".hydra" / name).is_file():
                hydra[name] = yaml.safe_load((path / ".hydra" / name).read_text()) or hydra[name]
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: unreadable summary.json or Hydra files ({exc})") from None
    if not isinstance(summary, dict):
        raise DataError(f"{path / 'summary.json'}: not a summary (expected a JSON object)")
    return Run(path, summary, hydra["config.yaml"], [str(o) for o in hydra["overrides.yaml"]])


def _job_order(path: Path) -> tuple[int, str]:
    number = path.name.split("_", 1)[0]
    return (int(number) if number.isdigit() else 1 << 30, path.name)


def find_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Runs from run directories (holding ``summary.json``) or sweep directories (whose
    subdirectories hold it), in the order given, a sweep's jobs in job-number order."""
    runs = []
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise DataError(f"run or sweep directory not found: {path}")
        if not path.is_dir():
            raise DataError(f"not a directory: {path} (give a run or sweep directory)")
        if (path / "summary.json").is_file():
            runs.append(load_run(path))
            continue
        jobs = sorted((p for p in path.iterdir() if (p / "summary.json").is_file()), key=_job_order)
        if not jobs:
            raise DataError(
                f"{path} holds no runs: no summary.json in it or its subdirectories "
                "(run the sweep first, e.g. python train.py -m model=dense,moe seed=1,2,3)"
            )
        runs.extend(load_run(job) for job in jobs)
    if not runs:
        raise DataError("no run directories given")
    return runs


def training_text(run_config: dict[str, Any], explicit: str | Path | None = None) -> str:
    """The text a run trained on: ``explicit`` if given, else ``data.path`` or the cached
    TinyShakespeare (``data.cache_dir/tinyshakespeare.txt``) of the run's resolved config, cut
    to ``data.max_chars`` where the run set it, as its DataModule cut it. A relative path is
    looked up from the working directory, then from the run's project root (``paths.root_dir``).
    """
    data = run_config.get("data") or {}
    max_chars = data.get("max_chars")
    if explicit is not None:
        return read_text(explicit)[:max_chars]
    path = Path(data.get("path") or Path(data.get("cache_dir") or "data") / "tinyshakespeare.txt")
    root = (run_config.get("paths") or {}).get("root_dir")
    for candidate in [path, *([Path(root) / path] if root else [])]:
        if candidate.is_file():
            return read_text(candidate)[:max_chars]
    raise DataError(
        f"the training text {path} was not found (from the run's data config); "
        "pass it explicitly with --train-text"
    )


def logged_expert_load(run: Run) -> dict[int, dict[int, float]]:
    """The last logged share of tokens per expert, ``{layer: {expert: share}}``; empty when the
    run logged no ``moe/layer{l}/load/expert{e}`` scalars (or no events at all)."""
    try:
        scalars = read_scalars(run.dir)
    except (FileNotFoundError, ValueError):
        return {}
    return expert_shares({tag: points[-1][1] for tag, points in scalars.items() if points})
