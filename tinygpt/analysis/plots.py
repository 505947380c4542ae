"""PNG plots of a run's metrics, read back from whichever logger wrote them, and loss curves of
several seeds.

A logger's files are the one record of a run's metrics: these plots read TensorBoard's event
files with TensorBoard's own reader, or the CSV logger's metrics.csv, instead of keeping a second
log. A run with both (``logger=many``) gives the same values from either.

Loss curves over seeds are drawn as a mean with a band of ± one standard deviation: val loss per
step, and per epoch (conf/experiment/notebook_100k.yaml) with when val loss is lowest, whether
it turns up after and the train/val gap. Per-epoch losses are the scalars :data:`TRAIN_TAG` and
:data:`VAL_TAG`, logged at step = epoch (training's ``EpochLoss``).
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from tinygpt.analysis.writing import save_figure

Series = list[tuple[int, float]]
TRAIN_TAG, VAL_TAG = "epoch/train_loss", "epoch/val_loss"  # per-epoch losses, step = epoch

# logger -> (its metrics files, what they are)
LOGGERS = {
    "tensorboard": ("events.out.tfevents.*", "TensorBoard event files"),
    "csv": ("metrics.csv", "CSV logger metrics.csv"),
}

# file name -> (tags drawn as lines, title, y label); a tag also matches the tags under it.
RUN_PLOTS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "loss.png": (("train/loss", "val/loss"), "Training and validation loss", "nats/char"),
    "val_ppl.png": (("val/ppl",), "Validation perplexity", "perplexity"),
    "lr.png": (("train/lr",), "Learning rate", "learning rate"),
    "grad_norm.png": (("train/grad_norm",), "Gradient norm before clipping", "L2 norm"),
}


def _version(file: Path) -> int:
    number = re.fullmatch(r"version_(\d+)", file.parent.name)
    return int(number.group(1)) if number else -1


def logger_files(run_dir: str | Path, logger: str) -> list[Path]:
    """One run's files of ``logger`` under ``run_dir`` (itself included), oldest first: event
    files share a directory; Lightning's CSVLogger writes ``<name>/version_<n>/metrics.csv``, a
    new version each time a run is resumed. Several such directories are several runs (e.g. a
    sweep directory): refused, never mixed."""
    files = sorted(Path(run_dir).rglob(LOGGERS[logger][0]), key=_version)
    roots = {f.parent if logger == "tensorboard" else f.parent.parent for f in files}
    if len(roots) > 1:
        names = ", ".join(dict.fromkeys(str(f.parent.relative_to(run_dir)) for f in files))
        raise ValueError(f"{run_dir} holds several runs' {logger} metrics ({names}); pass one run")
    return files


def read_scalars(run_dir: str | Path, logger: str | None = None) -> dict[str, Series]:
    """Every scalar a run logged: ``{tag: [(step, value), ...]}``, sorted by step.

    ``run_dir`` is a run directory or a logger's own directory. ``logger`` chooses the record:
    ``"tensorboard"`` (the event files) or ``"csv"`` (the CSV logger's metrics.csv); by default
    the event files where the run has them, else the CSV files. Where a step was logged twice (a
    resumed run repeats steps after its last checkpoint), the value written last wins.
    """
    if logger not in (None, *LOGGERS):
        raise ValueError(f"logger must be one of {', '.join(LOGGERS)}, got {logger!r}")
    loggers = [logger] if logger else list(LOGGERS)
    for name in loggers:
        if files := logger_files(run_dir, name):
            return _read_events(files[0].parent) if name == "tensorboard" else _read_csv(files)
    missing = ", ".join(f"no {LOGGERS[name][1]}" for name in loggers)
    raise FileNotFoundError(f"no metrics under {run_dir}: {missing}")


def _read_events(directory: Path) -> dict[str, Series]:
    # Imported here: a tenth of a second of a training run's start, for plots drawn at its end.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # size_guidance 0 keeps every event: the default samples scalars down to 10,000 points.
    accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    # The reader logs routine file-watching at INFO, which would land in the run's train.log.
    tb_logger = logging.getLogger("tensorboard")
    level = tb_logger.level
    tb_logger.setLevel(logging.WARNING)
    try:
        accumulator.Reload()
    finally:
        tb_logger.setLevel(level)
    scalars = {}
    for tag in accumulator.Tags()["scalars"]:
        by_step = {event.step: event.value for event in accumulator.Scalars(tag)}
        scalars[tag] = sorted(by_step.items())
    return scalars


def _read_csv(files: Sequence[Path]) -> dict[str, Series]:
    # One row per logging call: a "step" column and a column per tag, empty where the call did
    # not log that tag.
    by_tag: dict[str, dict[int, float]] = {}
    for file in files:
        with file.open(newline="") as rows:
            for row in csv.DictReader(rows):
                step = int(row.pop("step"))
                for tag, value in row.items():
                    if value not in ("", None):
                        by_tag.setdefault(tag, {})[step] = float(value)
    return {tag: sorted(points.items()) for tag, points in by_tag.items()}


def matching_series(scalars: dict[str, Series], tag: str) -> dict[str, Series]:
    """The series logged as ``tag`` or under it (``tag/...``), identical repeats dropped.

    A family such as one series per optimizer param group (``train/lr/pg1``, ``train/lr/pg2``,
    as Lightning's LearningRateMonitor logs them) is drawn as one line ``tag`` when all agree.
    """
    found = {t: s for t, s in scalars.items() if s and (t == tag or t.startswith(tag + "/"))}
    distinct: dict[str, Series] = {}
    for name, points in found.items():
        if points not in distinct.values():
            distinct[name] = points
    if len(distinct) == 1:
        return {tag: next(iter(distinct.values()))}
    return distinct


def plot_series(series: dict[str, Series], path: str | Path, title: str, ylabel: str) -> Path:
    """Line plot of labelled ``(step, value)`` series (none empty) against the training step,
    as a PNG."""
    fig = Figure(figsize=(6.4, 4.0), dpi=100, layout="constrained")
    ax = fig.subplots()
    for label, points in series.items():
        # Markers where points are few (validations), so single points stay visible.
        marker = "o" if len(points) <= 30 else None
        ax.plot(*zip(*points, strict=True), label=label, marker=marker, ms=3)
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    return save_figure(fig, path)


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write a run's standard plots (``RUN_PLOTS``) to ``out_dir`` (default: ``run_dir/plots``).

    A plot whose tags the run never logged is skipped; returns the files written.
    """
    scalars = read_scalars(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else Path(run_dir) / "plots"
    written = []
    for name, (tags, title, ylabel) in RUN_PLOTS.items():
        series = {}
        for tag in tags:
            series.update(matching_series(scalars, tag))
        if series:
            written.append(plot_series(series, out_dir / name, title, ylabel))
    return written


def mean_band(ax: Axes, series: Sequence[Series], label: str, color: str, style: str = "-") -> None:
    """Draw the mean of ``series`` (``[(x, y), ...]`` each) over the x values they all share,
    with a band of ± one standard deviation (none for a single series)."""
    shared = set.intersection(*(set(dict(s)) for s in series))
    xs = sorted(shared)
    values = np.array([[dict(s)[x] for x in xs] for s in series])
    mean = values.mean(0)
    std = values.std(0, ddof=1) if len(series) > 1 else np.zeros_like(mean)
    ax.plot(xs, mean, style, color=color, label=label)
    ax.fill_between(xs, mean - std, mean + std, color=color, alpha=0.2, lw=0)


def plot_val_curves(
    groups: dict[str, Sequence[str | Path]],
    path: str | Path,
    tag: str = "val/loss",
    title: str = "",
) -> Path:
    """``tag`` (default ``val/loss``) against the step for each group of runs (label -> run
    directories, e.g. dense and MoE over seeds): its mean with a band of ± one std."""
    fig = Figure(figsize=(7.0, 4.2), dpi=100, layout="constrained")
    ax = fig.subplots()
    for i, (label, runs) in enumerate(groups.items()):
        series = []
        for run in runs:
            if not (points := read_scalars(run).get(tag)):
                raise ValueError(f"{run} logged no {tag!r}")
            series.append(points)
        best = np.mean([min(v for _, v in s) for s in series])
        mean_band(ax, series, f"{label} (n={len(runs)}, mean best {best:.3f})", f"C{i}", "-o")
    ax.set(xlabel="step", ylabel=tag)
    ax.set_title(title or f"{tag}: mean ± std over seeds", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


@dataclass(frozen=True)
class EpochCurve:
    """One run's losses per epoch: ``epochs[i]`` has ``train[i]`` and ``val[i]``."""

    epochs: list[int]
    train: list[float]
    val: list[float]

    @property
    def best_epoch(self) -> int:
        """The epoch of the lowest val loss (the first, on ties)."""
        return self.epochs[int(np.argmin(self.val))]

    @property
    def best_val(self) -> float:
        return min(self.val)

    @property
    def final_gap(self) -> float:
        """Val minus train loss at the last epoch: how much better the model fits its training
        text than text it has not seen."""
        return self.val[-1] - self.train[-1]

    @property
    def late_change(self) -> float:
        """How val loss moves at the end: the mean over the last tenth of the epochs (at least
        one) minus the mean over the tenth before. Positive while it turns up (the model
        overfits), negative while it still falls, 0 on a plateau."""
        n = max(1, len(self.val) // 10)
        if len(self.val) < 2 * n:
            return float("nan")
        return float(np.mean(self.val[-n:]) - np.mean(self.val[-2 * n : -n]))

    @property
    def rise(self) -> float:
        """Val loss at the last epoch minus its lowest: how far it turned up (0 if it never
        did)."""
        return self.val[-1] - self.best_val


def read_epoch_curve(run_dir: str | Path) -> EpochCurve:
    """The run's per-epoch losses; a ValueError if it logged none (not a per-epoch run)."""
    scalars = read_scalars(run_dir)
    train, val = dict(scalars.get(TRAIN_TAG, [])), dict(scalars.get(VAL_TAG, []))
    epochs = sorted(set(train) & set(val))
    if not epochs:
        raise ValueError(
            f"{run_dir} logged no {TRAIN_TAG} and {VAL_TAG} (train it with "
            "experiment=notebook_100k)"
        )
    return EpochCurve(epochs, [train[e] for e in epochs], [val[e] for e in epochs])


def plot_epoch_curves(
    groups: dict[str, Sequence[EpochCurve]],
    path: str | Path,
    title: str = "",
    mark_epoch: int | None = None,
) -> Path:
    """Train (dashed) and val (solid) loss per epoch, one colour per group: the mean over its
    runs with a band of ± one standard deviation, and a dot at each run's best val epoch.
    ``mark_epoch`` draws a dotted vertical line there (the epoch a claim names)."""
    fig = Figure(figsize=(8.0, 4.8), dpi=100, layout="constrained")
    ax = fig.subplots()
    for i, (label, curves) in enumerate(groups.items()):
        color, n = f"C{i}", len(curves)
        for name, style in (("train", "--"), ("val", "-")):
            series = [list(zip(c.epochs, getattr(c, name), strict=True)) for c in curves]
            mean_band(ax, series, f"{label} {name} loss (mean ± std, n={n})", color, style)
        best = [(c.best_epoch, c.best_val) for c in curves]
        ax.plot(*zip(*best, strict=True), "o", color=color, ms=5, mec="black", mew=0.6)
    if mark_epoch is not None:
        ax.axvline(mark_epoch, color="grey", lw=1, ls=":", label=f"epoch {mark_epoch}")
    ax.set(xlabel="epoch (one pass over the training characters)", ylabel="loss (nats/char)")
    ax.set_title(title or "Loss per epoch; dots: each run's lowest val loss", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    low = min(min(c.train + c.val) for curves in groups.values() for c in curves)
    ax.set_ylim(low - 0.05, low + 1.0)  # the first epochs' high losses would flatten the rest
    return save_figure(fig, path)
