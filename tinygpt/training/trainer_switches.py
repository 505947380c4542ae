"""The Trainer's debugging switches, checked for what they mean to a stream of batches.

TinyGPT trains on an endless stream of random windows, so a run's length is ``max_steps`` and
an "epoch" is whatever ``limit_train_batches`` makes it: a fraction of an endless stream means
nothing. Lightning refuses such values only when training starts, with a traceback; these
checks run before the Trainer is built and say what to set instead, in one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tinygpt.errors import ConfigError

PROFILERS = ("simple", "advanced", "pytorch")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _whole(value: object) -> bool:
    """1.0 (Lightning's "all of it") or None, as Lightning's defaults are."""
    return value is None or (isinstance(value, float) and value == 1.0)


def check_trainer_switches(trainer: Mapping[str, Any]) -> None:
    """Raise ConfigError for a debugging switch of ``trainer`` (the trainer config) that Lightning
    would refuse late or that means nothing for a stream of batches."""
    fast_dev_run = trainer.get("fast_dev_run", False)
    if not (isinstance(fast_dev_run, bool) or (_is_int(fast_dev_run) and fast_dev_run >= 0)):
        raise ConfigError(
            f"trainer.fast_dev_run must be true, false or a number of steps >= 0, got "
            f"{fast_dev_run!r}"
        )
    limit_train = trainer.get("limit_train_batches")
    if not (_whole(limit_train) or (_is_int(limit_train) and limit_train >= 1)):
        raise ConfigError(
            "trainer.limit_train_batches must be an integer >= 1 (batches per epoch) or null: "
            "training is an endless stream of batches, whose length is trainer.max_steps, got "
            f"{limit_train!r}"
        )
    overfit = trainer.get("overfit_batches", 0)
    if not ((_is_int(overfit) and overfit >= 0) or overfit == 0.0):
        raise ConfigError(
            "trainer.overfit_batches must be a number of batches >= 0 (0: off), not a fraction "
            f"of an endless stream, got {overfit!r}"
        )
    limit_val = trainer.get("limit_val_batches")
    fraction = isinstance(limit_val, float) and 0.0 <= limit_val <= 1.0
    if not (limit_val is None or fraction or (_is_int(limit_val) and limit_val >= 0)):
        raise ConfigError(
            "trainer.limit_val_batches must be a number of batches >= 0, a fraction in [0, 1] "
            f"or null (all), got {limit_val!r}"
        )
    profiler = trainer.get("profiler")
    if not (profiler is None or profiler in PROFILERS or isinstance(profiler, Mapping)):
        raise ConfigError(
            f"trainer.profiler must be null, {', '.join(PROFILERS)} or a _target_ config, got "
            f"{profiler!r}"
        )
    detect_anomaly = trainer.get("detect_anomaly", False)
    if not isinstance(detect_anomaly, bool):
        raise ConfigError(f"trainer.detect_anomaly must be true or false, got {detect_anomaly!r}")
    accumulate = trainer.get("accumulate_grad_batches", 1)
    if not (_is_int(accumulate) and accumulate >= 1):
        raise ConfigError(
            f"trainer.accumulate_grad_batches must be an integer >= 1, got {accumulate!r}"
        )
