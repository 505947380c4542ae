"""Loss curves of several seeds, drawn as a mean with a band of ± one standard deviation: per
epoch (conf/experiment/notebook_100k.yaml) with when val loss is lowest, whether it turns up
after and the train/val gap; and val loss per step. Per-epoch losses are the scalars
:data:`TRAIN_TAG` and :data:`VAL_TAG`, logged at step = epoch (training's ``EpochLoss``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from tinygpt.analysis.plots import mean_band, read_scalars
from tinygpt.analysis.writing import save_figure

TRAIN_TAG = "epoch/train_loss"
VAL_TAG = "epoch/val_loss"


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
    ax.set_xlabel("epoch (one pass over the training characters)")
    ax.set_ylabel("loss (nats/char)")
    ax.set_title(title or "Loss per epoch; dots: each run's lowest val loss", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    low = min(min(c.train + c.val) for curves in groups.values() for c in curves)
    ax.set_ylim(low - 0.05, low + 1.0)  # the first epochs' high losses would flatten the rest
    return save_figure(fig, path)
