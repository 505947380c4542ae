"""Train TinyGPT: compose the config with Hydra, instantiate, fit, summarise.

python train.py                                  # seed-size dense model on TinyShakespeare
python train.py -m model.n_layer=2,4 seed=1,2    # a sweep, one run directory per job
"""

import time

LAUNCHED = time.time()  # before the heavy imports: wall time counts from launch

import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import hydra  # noqa: E402
import lightning as L  # noqa: E402
import torch  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from tinygpt import hydra_ddp  # noqa: E402
from tinygpt.callbacks import LastCheckpoint, TokenThroughput, tensorboard_dir  # noqa: E402
from tinygpt.cli import hydra_value, run_hydra_app, shell_word, user_errors  # noqa: E402
from tinygpt.config import register_resolvers  # noqa: E402
from tinygpt.errors import CheckpointError  # noqa: E402
from tinygpt.hparams import expert_load_balance, log_training_session  # noqa: E402
from tinygpt.module import TinyGPTModule  # noqa: E402

register_resolvers()
# Printed on every run and nothing a user can act on: Lightning's own use of a deprecated torch
# API; its notice that TinyGPTModule moves batches itself (on purpose: Lightning's generic walk
# over the batch costs about a millisecond a step); its advertisement for its cloud logger.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
warnings.filterwarnings("ignore", message=r"You have overridden `transfer_batch_to_device`")
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: not record.getMessage().startswith("💡 Tip")
)


# The first job of the launching process counts its wall time from launch; later jobs of a
# multirun, which share the process, from their own start. So do jobs in a launcher's worker
# processes (joblib, submitit): these globals reach them pickled, and the pid tells them apart.
_unclaimed_launch = [(os.getpid(), LAUNCHED)]


def job_start_time() -> float:
    if _unclaimed_launch and _unclaimed_launch[0][0] == os.getpid():
        return _unclaimed_launch.pop()[1]
    return time.time()


def train(cfg: DictConfig) -> float:
    started = job_start_time()
    hydra_ddp.install(__file__)
    L.seed_everything(cfg.seed, verbose=False)
    torch.set_float32_matmul_precision("high")  # TF32 matmuls on GPUs that have them
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup()
    module = TinyGPTModule(
        model_config=instantiate(cfg.model, vocab_size=datamodule.tokenizer.vocab_size),
        tokenizer=datamodule.tokenizer,
        optim=instantiate(cfg.optim),
        run_config=OmegaConf.to_container(cfg, resolve=True),
    )
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    for callback in callbacks:
        if isinstance(callback, LastCheckpoint):
            callback.resume_hint = f"resume with: {resume_command(run_dir)}"
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=instantiate(cfg.logger))
    with hydra_ddp.job_scope():
        ckpt_path = resolve_ckpt_path(cfg.ckpt_path, run_dir)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)

    checkpoint = trainer.checkpoint_callback
    throughput = next(c for c in callbacks if isinstance(c, TokenThroughput))
    final_val = trainer.callback_metrics.get("val/loss")
    summary = {
        "best_val_loss": _number(checkpoint.best_model_score if checkpoint else final_val),
        "final_val_loss": _number(final_val),
        "steps": trainer.global_step,
        "tokens_seen": trainer.global_step
        * trainer.accumulate_grad_batches
        * trainer.world_size
        * datamodule.batch_size
        * datamodule.block_size,
        "wall_seconds": round(time.time() - started, 2),
        "train_tokens_per_second": round(throughput.tokens / max(throughput.train_seconds, 1e-9)),
        "parameters": module.model.num_parameters(),
        # MoE only: from the expert loads last logged, as TensorBoard's moe/ scalars show them.
        **expert_load_balance(trainer.callback_metrics),
    }
    if trainer.is_global_zero:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        # The HParams dashboard's row for this run: its settings, and the summary's metrics.
        overrides = HydraConfig.get().overrides.task
        log_training_session(
            tensorboard_dir(trainer), module.run_config, overrides, summary, start=started
        )
        print(json.dumps(summary))
    return summary["best_val_loss"]


def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path) -> str | None:
    """``last`` means this run directory's last.ckpt; anything else is a path."""
    if ckpt_path != "last":
        return ckpt_path
    path = run_dir / "checkpoints" / "last.ckpt"
    if not path.exists():
        raise CheckpointError(
            f"ckpt_path=last: no checkpoint at {path}; add hydra.run.dir=<the run's directory>"
        )
    return str(path)


def resume_command(run_dir: Path) -> str:
    """The command line that continues this run from its last.ckpt, to paste into a shell."""
    kept = [o for o in HydraConfig.get().overrides.task if not o.startswith("ckpt_path=")]
    script = Path(__file__).resolve()
    if script.is_relative_to(Path.cwd().resolve()):
        script = script.relative_to(Path.cwd().resolve())
    words = [
        "python",
        str(script),
        *kept,
        f"hydra.run.dir={hydra_value(str(run_dir))}",
        "ckpt_path=last",
    ]
    return " ".join(shell_word(word) for word in words)


def _number(value) -> float | None:
    return None if value is None else round(float(value), 6)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    with user_errors():
        return train(cfg)


if __name__ == "__main__":
    run_hydra_app(main)
