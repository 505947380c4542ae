"""Epochs over a finite training split: the steps one pass takes, the notebook's 100k
experiment, and the loss per epoch logged by EpochLoss on a tiny text."""

import pytest
from helpers import compose_task, one_error_line

from tinygpt.analysis.plots import read_scalars
from tinygpt.cli import train as train_cli
from tinygpt.cli.train import train
from tinygpt.errors import ConfigError
from tinygpt.training.epochs import TRAIN_TAG, VAL_TAG, EpochLoss, epoch_steps, steps_per_epoch

QUIET = [
    "callbacks.attention_heatmap=null",
    "callbacks.sample_text=null",
    "callbacks.metric_plots=null",
    "callbacks.progress_bar=null",
]


def test_an_epoch_is_the_steps_that_draw_the_training_characters():
    assert steps_per_epoch(90_000, 64, 32) == 44  # 43.9 steps of 2048 characters
    assert steps_per_epoch(2048, 64, 32) == 1 and steps_per_epoch(2049, 64, 32) == 2
    assert epoch_steps(100_000, 0.9, 64, 32) == 44
    assert epoch_steps(100_000, 0.9, 64, 32, 60) == 2640


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((None, 0.9, 64, 32), "data.max_chars"),
        ((0, 0.9, 64, 32), "data.max_chars"),
        ((100_000, 0.9, 0, 32), "data.batch_size"),
        ((100_000, 0.9, 64, 32, 0), "epochs"),
        ((100_000, 0.9, 64, 32, 1.5), "epochs"),
    ],
)
def test_epoch_steps_refuses_bad_values_naming_them(args, message):
    with pytest.raises(ConfigError, match=message):
        epoch_steps(*args)


def test_the_experiment_is_the_notebooks_setting(tmp_path):
    cfg = compose_task("train", ["experiment=notebook_100k"], tmp_path)
    assert cfg.data.max_chars == 100_000 and cfg.data.train_fraction == 0.9
    assert cfg.trainer.val_check_interval == 44 and cfg.trainer.max_steps == 100 * 44
    assert cfg.callbacks.epoch_loss.steps_per_epoch == 44
    assert cfg.optim.min_lr == cfg.optim.lr  # constant after the warm-up
    cfg = compose_task(
        "train", ["experiment=notebook_100k", "epochs=5", "data.batch_size=32"], tmp_path
    )
    assert cfg.trainer.val_check_interval == 88 and cfg.trainer.max_steps == 5 * 88


def test_losses_per_epoch_are_the_mean_of_the_epochs_steps_and_its_validation(
    tiny_text_file, tmp_path
):
    # 4,000 characters: 3,600 train; batches of 25 x 16 = 400 characters: 9 steps an epoch.
    overrides = [
        "experiment=notebook_100k",
        f"data.path={tiny_text_file}",
        "data.max_chars=4000",
        "model.block_size=16",
        "data.batch_size=25",
        "epochs=3",
        "trainer.log_every_n_steps=1",
        *QUIET,
    ]
    train(compose_task("train", overrides, tmp_path))
    scalars = read_scalars(tmp_path)
    steps = [loss for _, loss in scalars["train/loss"]]
    val = dict(scalars["val/loss"])
    assert len(steps) == 27 and len(val) == 3
    epoch_train, epoch_val = dict(scalars[TRAIN_TAG]), dict(scalars[VAL_TAG])
    assert sorted(epoch_train) == sorted(epoch_val) == [1, 2, 3]
    for epoch in (1, 2, 3):
        mean = sum(steps[(epoch - 1) * 9 : epoch * 9]) / 9
        assert epoch_train[epoch] == pytest.approx(mean, rel=1e-5)
        assert epoch_val[epoch] == pytest.approx(val[epoch * 9 - 1])  # logged at step 8, 17, 26
    assert epoch_train[3] < epoch_train[1]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.max_chars=null"], "epochs are counted in data.max_chars characters"),
        (["epochs=0"], "epochs must be an integer >= 1, got 0"),
        # The tiny text has 5,960 characters, not 100,000: its epoch is not the configured one.
        ([], "the text is shorter than data.max_chars"),
    ],
)
def test_bad_epoch_settings_are_one_error_line_and_exit_2(
    tiny_text_file, tmp_path, capsys, overrides, message
):
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(
            [
                "experiment=notebook_100k",
                f"data.path={tiny_text_file}",
                f"hydra.run.dir={tmp_path / 'run'}",
                *QUIET,
                *overrides,
            ]
        )
    assert exit_info.value.code == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run" / "summary.json").exists()


def test_the_running_sum_travels_in_the_checkpoint():
    callback = EpochLoss(steps_per_epoch=4)
    callback._sum, callback._count = 6.5, 2
    resumed = EpochLoss(steps_per_epoch=4)
    resumed.load_state_dict(callback.state_dict())
    assert (resumed._sum, resumed._count) == (6.5, 2)
    with pytest.raises(ConfigError, match="steps_per_epoch"):
        EpochLoss(steps_per_epoch=0)
