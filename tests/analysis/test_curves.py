"""Loss curves over seeds: per-epoch facts on hand-made curves, reading them back from
TensorBoard events, and the mean-and-band pictures."""

import math

import pytest
from matplotlib.figure import Figure
from torch.utils.tensorboard import SummaryWriter

from tinygpt.analysis.plots import (
    TRAIN_TAG,
    VAL_TAG,
    EpochCurve,
    mean_band,
    plot_epoch_curves,
    plot_val_curves,
    read_epoch_curve,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Val loss falls to 1.5 at epoch 4, then turns up; train keeps falling.
OVERFITTING = EpochCurve(
    epochs=list(range(1, 11)),
    train=[3.0, 2.5, 2.0, 1.6, 1.4, 1.2, 1.1, 1.0, 0.9, 0.8],
    val=[3.0, 2.4, 1.9, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0, 2.1],
)


def test_epoch_curve_facts_by_hand():
    assert OVERFITTING.best_epoch == 4 and OVERFITTING.best_val == 1.5
    assert OVERFITTING.rise == pytest.approx(2.1 - 1.5)
    assert OVERFITTING.final_gap == pytest.approx(2.1 - 0.8)
    # A tenth of 10 epochs is 1: the last epoch's val minus the one before.
    assert OVERFITTING.late_change == pytest.approx(0.1)
    falling = EpochCurve(list(range(1, 21)), [1.0] * 20, [3.0 - 0.1 * i for i in range(20)])
    # Tenths of 2 epochs: mean(1.2, 1.1) - mean(1.4, 1.3) = -0.2 while it still falls.
    assert falling.best_epoch == 20 and falling.rise == 0.0
    assert falling.late_change == pytest.approx(-0.2)
    assert math.isnan(EpochCurve([1], [1.0], [1.0]).late_change)  # one epoch: no trend


def write_epochs(run_dir, curve: EpochCurve) -> None:
    writer = SummaryWriter(str(run_dir / "tb"))
    for epoch, train, val in zip(curve.epochs, curve.train, curve.val, strict=True):
        writer.add_scalar(TRAIN_TAG, train, epoch)
        writer.add_scalar(VAL_TAG, val, epoch)
        writer.add_scalar("val/loss", val, epoch * 44 - 1)
    writer.close()


def test_curves_are_read_back_from_events(tmp_path):
    write_epochs(tmp_path / "run", OVERFITTING)
    curve = read_epoch_curve(tmp_path / "run")
    assert curve.epochs == OVERFITTING.epochs
    assert curve.val == pytest.approx(OVERFITTING.val) and curve.train == pytest.approx(
        OVERFITTING.train
    )
    other = tmp_path / "plain"
    SummaryWriter(str(other / "tb")).add_scalar("val/loss", 2.0, 10)
    with pytest.raises(ValueError, match="notebook_100k"):
        read_epoch_curve(other)


def test_mean_band_is_the_mean_over_shared_x_with_a_std_band():
    fig = Figure()
    ax = fig.subplots()
    mean_band(ax, [[(1, 1.0), (2, 2.0), (3, 9.0)], [(1, 3.0), (2, 4.0)]], "g", "C0")
    line = ax.lines[0]
    assert list(line.get_xdata()) == [1, 2]  # x = 3 only in one series
    assert list(line.get_ydata()) == [2.0, 3.0]
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(2.0 - math.sqrt(2)) and band.max() == pytest.approx(
        3.0 + math.sqrt(2)
    )


def test_pictures_are_written(tmp_path):
    runs = []
    for i in range(2):
        shifted = EpochCurve(
            OVERFITTING.epochs, OVERFITTING.train, [v + 0.1 * i for v in OVERFITTING.val]
        )
        write_epochs(tmp_path / f"run{i}", shifted)
        runs.append(tmp_path / f"run{i}")
    curves = [read_epoch_curve(r) for r in runs]
    path = plot_epoch_curves(
        {"dense": curves, "moe": curves[:1]}, tmp_path / "e.png", mark_epoch=15
    )
    assert path.read_bytes().startswith(PNG_MAGIC)
    path = plot_val_curves({"dense": runs}, tmp_path / "v.png")
    assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 10_000
    with pytest.raises(ValueError, match="logged no"):
        plot_val_curves({"dense": runs}, tmp_path / "x.png", tag="no/such")
