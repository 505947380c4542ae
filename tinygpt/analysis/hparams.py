"""TensorBoard HParams sessions: what a run was set to and what it achieved, one table row each.

Each run (a ``train.py`` or ``generate.py`` job) writes one session into its own TensorBoard
directory (``tb/``, so TensorBoard lists the run once) with ``summary_v2.hparams_pb``: its
hyperparameters (flattened config values, dotted as on the command line) and its metrics as
scalars. No experiment summary (``hparams_config_pb``) is written: TensorBoard takes the first
one it finds as the whole dashboard's columns, so runs of different kinds under one ``--logdir``
would hide each other's. Without one, the columns are every session's hyperparameters, and
every scalar tag of the sessions' runs (the last value logged) as a metric.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tensorboard.plugins.hparams.summary_v2 import hparams_pb
from torch.utils.tensorboard import SummaryWriter

from tinygpt.analysis.moe import expert_shares

HParamValue = bool | int | float | str

# What a training run's row shows: these keys of summary.json, tagged summary/<key>.
TRAINING_METRICS = (
    "best_val_loss",
    "final_val_loss",
    "train_tokens_per_second",
    "wall_seconds",
    "expert_load_min_over_max",
)
# The config sections that shape a training run, and the keys in them that do not.
TRAINING_SECTIONS = ("model", "optim", "data", "trainer", "seed")
NOT_SHAPING = frozenset(
    {
        "data.block_size",  # model.block_size, interpolated
        "data.seed",  # seed, interpolated
        "data.cache_dir",
        "data.pin_memory",
        "trainer.default_root_dir",
        "trainer.plugins",
        "trainer.enable_model_summary",
        "trainer.max_epochs",  # training ends at max_steps
        "trainer.num_sanity_val_steps",
        "trainer.use_distributed_sampler",
        "data.val_batch_size",  # validation is exact whatever its batch size
    }
)

INSTANTIATE_KEYS = frozenset({"_target_", "_convert_", "_recursive_", "_partial_", "_args_"})


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, HParamValue]:
    """Nested config values as ``{"model.n_layer": 2, ...}``: numbers, strings and bools as
    they are, lists as their JSON text; ``None`` (unset) and Hydra's ``_target_`` and
    ``_convert_`` keys are left out."""
    flat: dict[str, HParamValue] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if key in INSTANTIATE_KEYS or value is None:
            continue
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, default=str)
    return flat


_MISSING = object()


def _lookup(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def override_hparams(config: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, HParamValue]:
    """What Hydra's task overrides (``key=value``) set, as hyperparameters.

    A key naming a config value gives that value as the run resolved it (``model.n_layer=4``
    gives the number 4); a key naming a config group or nothing in the config gives the text of
    its value (``model=moe`` gives ``"moe"``). Deletions (``~key``) give nothing.
    """
    hparams: dict[str, HParamValue] = {}
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or key.startswith("~"):
            continue
        key = key.lstrip("+")
        value = _lookup(config, key)
        if value is _MISSING or isinstance(value, Mapping):
            hparams[key] = text
        else:
            hparams.update(flatten({key: value}))
    return hparams


def training_hparams(config: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, HParamValue]:
    """A training run's hyperparameters: the model, optimizer, data and trainer values that
    shape it, ``seed``, and whatever its overrides set (so a sweep's varied keys are columns)."""
    shaping = flatten({k: config[k] for k in TRAINING_SECTIONS if k in config})
    hparams = {k: v for k, v in shaping.items() if k not in NOT_SHAPING}
    return {"kind": "train", **hparams, **override_hparams(config, overrides)}


def training_metrics(summary: Mapping[str, Any]) -> dict[str, float | None]:
    """The summary.json values a training run's row shows, tagged ``summary/<key>``."""
    return {f"summary/{key}": summary[key] for key in TRAINING_METRICS if key in summary}


def expert_load_balance(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``{"expert_load_min_over_max": ...}`` from logged ``moe/layer{l}/load/expert{e}`` values:
    the smallest expert share over the largest, in the most uneven layer. 1 is perfectly even;
    0 means an expert got no token (where max / min would be infinite). Empty without experts."""
    layers = [list(shares.values()) for shares in expert_shares(metrics).values()]
    if not layers:
        return {}
    return {"expert_load_min_over_max": round(min(min(s) / max(s) for s in layers), 4)}


def log_session(
    writer: SummaryWriter,
    hparams: Mapping[str, HParamValue],
    metrics: Mapping[str, float | None],
    step: int = 0,
    start: float | None = None,
) -> None:
    """Write one session through ``writer``, the run's own (``<run>/tb``); metrics that are
    ``None`` or not finite are left out. The session group is named after the run directory and
    two above it (``multirun/<date_time>/<job>``), so each run is its own row."""
    group = "/".join(Path(writer.log_dir).resolve().parent.parts[-3:])
    writer.file_writer.add_summary(hparams_pb(dict(hparams), group, start))
    for tag, value in metrics.items():
        if value is not None and math.isfinite(value):
            writer.add_scalar(tag, value, step)


def log_training_session(
    log_dir: str | Path | None,
    config: Mapping[str, Any],
    overrides: Sequence[str],
    summary: Mapping[str, Any],
    start: float | None = None,
) -> None:
    """A finished training run's session: :func:`training_hparams`, :func:`training_metrics`
    at ``summary["steps"]``. Nothing without a TensorBoard directory (``log_dir`` None)."""
    if log_dir is None:
        return
    with SummaryWriter(str(log_dir)) as writer:
        hparams, metrics = training_hparams(config, overrides), training_metrics(summary)
        log_session(writer, hparams, metrics, summary.get("steps", 0), start)
