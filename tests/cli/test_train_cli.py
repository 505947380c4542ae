"""train.py as a user runs it: one run and one sweep in a subprocess, the command's refusals in
this process (tinygpt.cli.train.main, the same Hydra app)."""

import json

import pytest
import torch
from helpers import TINY_RUN, one_error_line, run_train

from tinygpt.checkpoint import load_model
from tinygpt.cli import train as train_cli

SUMMARY_KEYS = {
    "best_val_loss",
    "final_val_loss",
    "steps",
    "tokens_seen",
    "wall_seconds",
    "train_tokens_per_second",
    "parameters",
}


@pytest.mark.slow
def test_train_writes_checkpoints_events_and_summary(tiny_text_file, tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(*TINY_RUN, f"data.path={tiny_text_file}", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS
    assert summary["steps"] == 20
    assert summary["tokens_seen"] == 20 * 8 * 16
    assert summary["best_val_loss"] <= summary["final_val_loss"] + 1e-9
    assert summary["best_val_loss"] < 3.0  # well below ln(vocab) after 20 steps on repetitive text
    assert json.loads(result.stdout.strip().splitlines()[-1]) == summary
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    # Lightning's messages reach train.log, and the console once (not also through its handler).
    assert "`Trainer.fit` stopped: `max_steps=20` reached." in (run_dir / "train.log").read_text()
    assert result.stderr.count("GPU available:") + result.stdout.count("GPU available:") == 1
    for noise in ("Tip:", "transfer_batch_to_device", "LeafSpec"):  # filtered by tinygpt.cli
        assert noise not in result.stderr + result.stdout, noise

    # The checkpoint alone rebuilds model and tokenizer, through a weights-only load.
    model = load_model(run_dir / "checkpoints" / "last.ckpt")
    assert model.config.block_size == 16
    ids = model.tokenizer.encode("First Citizen")[None]
    logits, _ = model(ids)
    assert logits.shape == (1, 13, model.tokenizer.vocab_size)
    assert torch.isfinite(logits).all()


@pytest.mark.slow
def test_multirun_writes_one_directory_per_job(tiny_text_file, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_train(
        "-m",
        *TINY_RUN,
        "trainer.max_steps=10",
        "seed=1,2",
        f"data.path={tiny_text_file}",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr
    job_dirs = sorted(p.name for p in sweep.iterdir() if (p / "summary.json").is_file())
    # Job directories, hence TensorBoard run names, are named after the job's overrides.
    assert job_dirs == [
        f"{n}_callbacks.attention_heatmap-null+data.batch_size-8+model.block_size-16+seed-{n + 1}"
        "+trainer.log_every_n_steps-5+trainer.max_steps-10+trainer.val_check_interval-10"
        "+trainer-cpu"
        for n in (0, 1)
    ]
    assert all(list((sweep / d / "tb").glob("events.out.tfevents.*")) for d in job_dirs)
    losses = [
        json.loads((sweep / d / "summary.json").read_text())["final_val_loss"] for d in job_dirs
    ]
    assert losses[0] != losses[1]  # different seeds, different runs


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.path=/nonexistent/file.txt", "data file not found"),
        ("data.batch_size=0", "data.batch_size must be an integer >= 1"),
        ("data.max_chars=0", "data.max_chars must be null or an integer >= 1"),
        ("model.block_size=0", "model.block_size must be an integer >= 1"),
        ("model.n_head=5", "divisible"),
        # Types: OmegaConf's, against the config dataclasses, as Hydra composes the config.
        ("model.n_layer=two", "model.n_layer=two Value 'two' of type 'str' could not be converted"),
        ("data.batch_size=1.5", "Value '1.5' of type 'float' could not be converted to Integer"),
        (
            "optim.lr=fast",
            "optim.lr=fast Value 'fast' of type 'str' could not be converted to Float",
        ),
        ("model.bias=maybe", "Value 'maybe' is not a valid bool"),
        ("resume_data_change=maybe", "resume_data_change must be refuse or allow, got 'maybe'"),
        ("callbacks.sample_text.max_new_tokens=0", "callbacks.sample_text.max_new_tokens"),
        ("no_such_key=1", "Could not override 'no_such_key'"),
        # The Trainer's debugging switches are in the trainer config: no + needed, values checked.
        ("trainer.limit_train_batches=0.5", "training is an endless stream of batches"),
        ("trainer.limit_train_batches=0", "trainer.limit_train_batches must be an integer >= 1"),
        ("trainer.overfit_batches=0.1", "trainer.overfit_batches must be a number of batches"),
        ("trainer.detect_anomaly=yes", "trainer.detect_anomaly must be true or false, got 'yes'"),
        ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches must be an integer"),
        # Lightning's own words where it says it well, on one line.
        ("trainer.profiler=fancy", "`profiler` parameter of `Trainer`, it can only be one of"),
        ("trainer.fast_dev_run=-1", "fast_dev_run=-1 is not a valid configuration"),
        ("trainer.limit_val_batches=1.5", "invalid value 1.5 for limit_val_batches"),
        ("trainer.limit_val_batches=-2", "invalid value -2 for limit_val_batches"),
        ("debug=no_such_option", "Could not find 'debug/no_such_option'"),
        ("logger=null", "Config group override must be a string or a list"),
        ("model=no_such_model", "Could not find 'model/no_such_model'"),
        ("experiment=no_such_recipe", "Could not find 'experiment/no_such_recipe'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tiny_text_file, tmp_path, capsys, override, message):
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(
            [
                *TINY_RUN,
                f"data.path={tiny_text_file}",
                f"hydra.run.dir={tmp_path / 'run'}",
                override,
            ]
        )
    assert exit_info.value.code == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run" / "summary.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU hint; trainer=gpu would run")
@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ("trainer=gpu", "No supported gpu backend found!"),
        ("trainer=fsdp", "No supported gpu backend found!"),
        ("trainer.accelerator=tpu", "Requirement 'torch_xla>=1.13' not met."),
        ("trainer.accelerator=mps", "`MPSAccelerator` can not run on your system"),
        ("trainer.devices=0", "`Trainer(devices=0)` value is not a valid input"),
        ("trainer.precision=bf17", "Precision 'bf17' is invalid."),
    ],
)
def test_a_trainer_setting_lightning_refuses_is_one_line_with_what_to_use(
    tiny_text_file, tmp_path, capsys, override, reason
):
    tiny = (
        [o for o in TINY_RUN if o != "trainer=cpu"] if override.startswith("trainer=") else TINY_RUN
    )
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(
            [*tiny, f"data.path={tiny_text_file}", f"hydra.run.dir={tmp_path}", override]
        )
    assert exit_info.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: trainer: {reason}")
    assert line.endswith(
        "(no GPU is visible: use trainer=cpu, or trainer=default, which picks the device)"
    )
