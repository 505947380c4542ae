"""Every option of every config group composes, resolves and instantiates."""

import pytest
import torch
from helpers import CONF, compose_task, needs_sweeps
from hydra.utils import instantiate
from omegaconf import OmegaConf

GROUPS = [
    "paths",
    "data",
    "model",
    "trainer",
    "logger",
    "callbacks",
    "experiment",
    "hparams_search",
    "debug",
]
OPTIONS = [
    pytest.param(
        g, p.stem, id=f"{g}={p.stem}", marks=[needs_sweeps] if g == "hparams_search" else []
    )
    for g in GROUPS
    for p in sorted((CONF / g).glob("*.yaml"))
]


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_option_composes_and_instantiates(group, option, tmp_path):
    cfg = compose_task("train", [f"{group}={option}"], tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert "hydra" not in resolved
    assert cfg.data.block_size == cfg.model.block_size  # one source of truth
    model_config = instantiate(cfg.model, vocab_size=65)
    assert model_config.n_embd % model_config.n_head == 0
    instantiate(cfg.data)
    instantiate(cfg.optim)
    loggers = [instantiate(lg) for lg in cfg.logger.values()]
    assert (loggers or option == "none") and all(hasattr(lg, "log_metrics") for lg in loggers)
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    if cfg.trainer.accelerator != "gpu" or torch.cuda.is_available():
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False)
        # A fast dev run (debug=fdr) is fast_dev_run steps (true: 1), whatever max_steps says.
        fast_dev_run = cfg.trainer.fast_dev_run
        assert trainer.max_steps == (int(fast_dev_run) if fast_dev_run else cfg.trainer.max_steps)


def test_groups_all_have_options():
    assert {option.values[0] for option in OPTIONS} == set(GROUPS)


def test_standard_names_are_overridable(tmp_path):
    cfg = compose_task(
        "train",
        [
            "seed=3",
            "trainer.max_steps=7",
            "model.block_size=16",
            "model.n_layer=3",
            "model.n_embd=48",
            "model.n_head=6",
            "data.batch_size=5",
        ],
        tmp_path,
    )
    assert cfg.data.seed == 3 and cfg.data.block_size == 16 and cfg.data.batch_size == 5
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.model.n_head) == (3, 48, 6)


def test_cpu_fast_overrides_the_run_defaults_too(tmp_path):
    # train.yaml's own keys (optim) must not win over an experiment's.
    cfg = compose_task("train", ["experiment=cpu_fast"], tmp_path)
    assert (cfg.optim.lr, cfg.optim.min_lr, cfg.optim.warmup_steps) == (5e-3, 3e-4, 50)
    assert (cfg.model.block_size, cfg.data.block_size) == (64, 64)
    assert (cfg.trainer.max_steps, cfg.trainer.val_check_interval) == (350, 350)
    assert (cfg.optim.name, cfg.optim.muon_lr) == ("muon", 0.08)
    assert cfg.callbacks.attention_heatmap is None


def test_nanogpt_baby_is_nanogpts_recipe(tmp_path):
    cfg = compose_task("train", ["experiment=nanogpt_baby"], tmp_path)
    m, o, t = cfg.model, cfg.optim, cfg.trainer
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size, m.dropout) == (6, 6, 384, 256, 0.2)
    assert cfg.data.batch_size == 64
    assert (o.lr, o.min_lr, o.warmup_steps, o.weight_decay, list(o.betas)) == (
        1e-3,
        1e-4,
        100,
        0.1,
        [0.9, 0.99],
    )
    assert (t.max_steps, t.gradient_clip_val) == (5000, 1.0)


def test_cpu_and_gpu_precisions(tmp_path):
    assert compose_task("train", ["trainer=cpu"], tmp_path).trainer.precision == "32-true"
    assert compose_task("train", ["trainer=gpu"], tmp_path).trainer.precision == "bf16-mixed"


def test_logger_many_is_tensorboard_and_csv(tmp_path):
    cfg = compose_task("train", ["logger=many"], tmp_path)
    targets = [lg._target_ for lg in cfg.logger.values()]
    assert targets == [
        "lightning.pytorch.loggers.TensorBoardLogger",
        "lightning.pytorch.loggers.CSVLogger",
    ]
