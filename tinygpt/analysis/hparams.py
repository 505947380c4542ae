"""TensorBoard HParams sessions: what a run was set to and what it achieved, one table row each.

Each run (a ``train.py`` or ``generate.py`` job) writes one *session* into ``<tb>/hparams/``:
its hyperparameters (flattened config values, dotted as on the command line), a success end
status, and its metrics as scalars under the same tags, which is where the HParams dashboard
reads a session's metric values (the last value of each tag in the session's run).

Two choices differ from ``SummaryWriter.add_hparams`` and Lightning's ``log_hyperparams``:

* No *experiment* summary is written. TensorBoard takes the first experiment summary it finds
  as the whole dashboard's columns, so runs of different kinds under one ``--logdir`` (dense
  and MoE, training and generation) would hide each other's hyperparameters and metrics.
  Without one it builds the columns from every session's values: their union, typed per column.
* The session lives in a subdirectory of the run's events: the dashboard's metric columns are
  every scalar tag of a session's run, so in ``tb/`` itself each attention head and expert
  load would become a column.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata
from tensorboard.plugins.hparams.plugin_data_pb2 import (
    HParamsPluginData,
    SessionEndInfo,
    SessionStartInfo,
)

HParamValue = bool | int | float | str

SESSION_DIR = "hparams"  # under a run's TensorBoard directory

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
EXPERT_LOAD_TAG = re.compile(r"^moe/layer(\d+)/load/expert(\d+)$")


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
    layers: dict[int, list[float]] = {}
    for tag, value in metrics.items():
        match = EXPERT_LOAD_TAG.match(tag)
        if match:
            layers.setdefault(int(match[1]), []).append(float(value))
    if not layers:
        return {}
    return {"expert_load_min_over_max": round(min(min(s) / max(s) for s in layers.values()), 4)}


def _plugin_summary(tag: str, data: HParamsPluginData) -> Summary:
    summary = Summary()
    summary.value.add(
        tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR
    )
    return summary


def session_start(hparams: Mapping[str, HParamValue], group: str, start: float) -> Summary:
    """The session's hyperparameters, each typed for the dashboard (bools stay bools)."""
    info = SessionStartInfo(group_name=group, start_time_secs=start)
    for name, value in hparams.items():
        if isinstance(value, bool):
            info.hparams[name].bool_value = value
        elif isinstance(value, (int, float)):
            info.hparams[name].number_value = value
        elif isinstance(value, str):
            info.hparams[name].string_value = value
        else:
            raise TypeError(f"hyperparameter {name}={value!r}: not a bool, number or string")
    return _plugin_summary(
        metadata.SESSION_START_INFO_TAG, HParamsPluginData(session_start_info=info)
    )


def session_end(end: float) -> Summary:
    info = SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=end)
    return _plugin_summary(metadata.SESSION_END_INFO_TAG, HParamsPluginData(session_end_info=info))


def log_session(
    log_dir: str | Path,
    hparams: Mapping[str, HParamValue],
    metrics: Mapping[str, float | None],
    step: int = 0,
    start: float | None = None,
) -> Path:
    """Write one finished session into ``<log_dir>/hparams`` (replacing an earlier one, as a
    resumed run does); metrics that are ``None`` or not finite are left out. Returns the dir.

    ``log_dir`` is the run's TensorBoard directory (``<run>/tb``); the session group is named
    after the run directory and two above it (``multirun/<date_time>/<job>``), so each run is
    its own row (a group of sessions with equal names is one row).
    """
    from torch.utils.tensorboard import SummaryWriter

    log_dir = Path(log_dir)
    session_dir = log_dir / SESSION_DIR
    shutil.rmtree(session_dir, ignore_errors=True)
    group = "/".join(log_dir.resolve().parent.parts[-3:])  # e.g. multirun/<date_time>/<job>
    now = time.time()
    writer = SummaryWriter(str(session_dir))
    try:
        writer.file_writer.add_summary(session_start(hparams, group, start or now))
        for tag, value in metrics.items():
            if value is not None and math.isfinite(value):
                writer.add_scalar(tag, value, step)
        writer.file_writer.add_summary(session_end(now))
    finally:
        writer.close()
    return session_dir


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
    log_session(
        log_dir,
        training_hparams(config, overrides),
        training_metrics(summary),
        step=summary.get("steps", 0),
        start=start,
    )
