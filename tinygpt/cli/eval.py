"""The run behind ``python eval.py``: a checkpoint's loss on a text, measured as training does.

    python eval.py ckpt_path=outputs/runs/<run>/checkpoints/best.ckpt          # its val split
    python eval.py ckpt_path=... data.path=other.txt split=all skip_unknown=true

The checkpoint's model and tokenizer go into the LightningModule and DataModule that trained it,
and ``Trainer.test`` runs their validation step over the chosen split of the text (by default the
text the checkpoint was trained on, split by its ``data.train_fraction``): on the val split it
gives the training run's val loss. Prints one JSON line (log messages go to stderr) and writes
eval.json into the run directory, ``outputs/eval/<date_time>/``.

:func:`main` is the command; tests compose a config and call :func:`evaluate` in-process.
"""

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

import tinygpt.cli.quiet  # noqa: F401  (on import: Lightning's needless notices off)
from tinygpt.checkpoint import load_model, run_config_of
from tinygpt.cli.errors import run_hydra_app, user_errors
from tinygpt.cli.paths import checkpoint_to_use, root_dir, run_dir_lock
from tinygpt.cli.resolvers import register_resolvers
from tinygpt.data.datamodule import CharDataModule
from tinygpt.data.tokenizer import UnknownCharactersError
from tinygpt.errors import DataError, require
from tinygpt.files import write_text_atomic
from tinygpt.training import TinyGPTModule

SHAKESPEARE_FILE = "tinyshakespeare.txt"


def check_config(cfg: DictConfig) -> None:
    """The values a user sets, checked before anything is loaded (``split``: by the DataModule)."""
    require(
        isinstance(cfg.skip_unknown, bool),
        f"skip_unknown must be true or false, got {cfg.skip_unknown!r}",
    )
    batch = cfg.data.batch_size
    require(
        batch is None or (type(batch) is int and batch >= 1),
        f"data.batch_size must be an integer >= 1, got {batch!r}",
    )
    require(
        cfg.trainer.get("strategy", "auto") == "auto" and cfg.trainer.devices == 1,
        "eval.py evaluates on one device: use trainer=default, cpu or gpu",
    )


def text_source(cfg: DictConfig, trained_on: dict[str, Any]) -> dict[str, Any]:
    """The DataModule's ``path``, ``cache_dir`` and ``max_chars``: ``data.path`` (whole), else the
    checkpoint's training text (its ``data.path``, or TinyShakespeare, downloaded and verified if
    not cached) cut to the training's ``data.max_chars``, so its splits are the training's."""
    if cfg.data.path is not None:
        return {"path": str(cfg.data.path), "cache_dir": cfg.paths.data_dir, "max_chars": None}
    source = {
        "path": None,
        "cache_dir": cfg.paths.data_dir,
        "max_chars": trained_on.get("max_chars"),
    }
    if trained_on.get("path"):
        path = Path(trained_on["path"])
        # A relative path was given from the training's working directory, or the project root.
        found = [p for p in (path, Path(root_dir()) / path) if p.is_file()]
        if not found:
            raise DataError(
                f"the checkpoint's training text {path} was not found; give the text as "
                "data.path=FILE"
            )
        return {**source, "path": str(found[0])}
    cache_dir = trained_on.get("cache_dir")
    if cache_dir and (Path(cache_dir) / SHAKESPEARE_FILE).is_file():
        source["cache_dir"] = str(cache_dir)
    return source


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """One eval job of a composed config (HydraConfig set): test the checkpoint on the split,
    write eval.json into the run directory and print it as one line; returns the record."""
    check_config(cfg)
    ckpt_path = checkpoint_to_use(cfg.ckpt_path, cfg.paths.log_dir)
    model = load_model(ckpt_path)
    run_config = run_config_of(ckpt_path)
    trained_on = run_config.get("data") or {}
    datamodule = CharDataModule(
        **text_source(cfg, trained_on),
        block_size=model.config.block_size,
        val_batch_size=cfg.data.batch_size or trained_on.get("val_batch_size", 512),
        train_fraction=trained_on.get("train_fraction", 0.9),
        tokenizer=model.tokenizer,
        skip_unknown=cfg.skip_unknown,
        test_split=cfg.split,
    )
    datamodule.prepare_data()
    try:
        datamodule.setup("test")
    except UnknownCharactersError as exc:
        raise UnknownCharactersError(
            f"{exc}; skip_unknown=true evaluates the text without them"
        ) from None

    model.config.compile = False  # one pass over a split: compiling would cost more than it saves
    module = TinyGPTModule(model.config, model.tokenizer, run_config=run_config)
    module.model = model  # the checkpoint's weights, already loaded
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)
    (metrics,) = trainer.test(module, datamodule=datamodule, verbose=False)
    loss = metrics["test/loss"]
    record = {
        "loss": round(loss, 6),
        "perplexity": round(math.exp(loss), 4),
        "bits_per_char": round(loss / math.log(2), 6),
        "tokens": len(datamodule.test_dataloader().dataset.windows) * model.config.block_size,
        "skipped_characters": datamodule.skipped,
        "split": cfg.split,
        "text": str(datamodule.text_path),
        "ckpt_path": str(ckpt_path),
    }
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    write_text_atomic(out_dir / "eval.json", json.dumps(record, indent=2) + "\n")
    print(json.dumps(record), flush=True)
    return record


def _job(cfg: DictConfig) -> None:
    with user_errors(), run_dir_lock(HydraConfig.get().runtime.output_dir):
        evaluate(cfg)


def main(argv: Sequence[str] | None = None) -> None:
    """``python eval.py ARGV`` (``argv`` None: this process's command line)."""
    register_resolvers()
    run_hydra_app("eval", _job, argv)
