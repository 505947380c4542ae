"""TinyShakespeare results unchanged, bit for bit, whatever the data pipeline does inside.

The values are computed through the data module's public surface, so the same code runs against
any version of the pipeline. ``fixtures/shakespeare_parity.json`` holds them as main computed them
before the token cache (commit 9f5a17c: the text encoded into one int64 tensor in RAM), written by
``python tests/data/test_shakespeare_parity.py`` from the repository root. The val loss was the
same with 1, 2 and 4 torch threads.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import torch

from tinygpt.data import CharDataModule
from tinygpt.models import TinyGPTConfig
from tinygpt.training import OptimConfig, TinyGPTModule

FIXTURE = Path(__file__).parent / "fixtures" / "shakespeare_parity.json"
TRAIN_BATCHES = 4
SHORT_RUN_STEPS = 10


def _digest(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        assert tensor.dtype == torch.int64, tensor.dtype  # what the model is fed
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _as_rank(dm: CharDataModule, rank: int, world: int) -> CharDataModule:
    dm.trainer = SimpleNamespace(
        global_rank=rank,
        world_size=world,
        global_step=0,
        accumulate_grad_batches=1,
        overfit_batches=0,
    )
    return dm


def parity_values(cache_dir: Path) -> dict:
    """Digests of the first training batches and of the validation batches for ranks 0 and 1 of
    two, and the exact val loss (float.hex) of a 10-step run, with the default data settings."""
    values: dict = {"train": {}, "val": {}}
    for rank, world in ((0, 1), (0, 2), (1, 2)):
        dm = CharDataModule(cache_dir=str(cache_dir))
        dm.prepare_data()
        dm.setup()
        _as_rank(dm, rank, world)
        stream = iter(dm.train_dataloader())
        key = f"rank{rank}_of_{world}"
        values["train"][key] = [_digest(*next(stream)) for _ in range(TRAIN_BATCHES)]
        batches = list(dm.val_dataloader())
        values["val"][key] = {
            "sizes": [len(x) for x, _ in batches],
            "sha256": _digest(*(t for batch in batches for t in batch)),
        }
    values["val_loss_after_10_steps"] = short_run_val_loss(cache_dir).hex()
    return values


def short_run_val_loss(cache_dir: Path) -> float:
    """The notebook's model trained 10 steps on TinyShakespeare, then validated on the split."""
    L.seed_everything(1337, verbose=False)
    dm = CharDataModule(cache_dir=str(cache_dir))
    dm.prepare_data()
    dm.setup()
    module = TinyGPTModule(
        TinyGPTConfig(vocab_size=dm.tokenizer.vocab_size, block_size=32, n_layer=2, n_head=4),
        dm.tokenizer,
        OptimConfig(warmup_steps=2),
        {"seed": 1337},
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=SHORT_RUN_STEPS,
        max_epochs=-1,
        val_check_interval=SHORT_RUN_STEPS,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=dm)
    return trainer.callback_metrics["val/loss"].item()


def test_batches_and_val_loss_equal_those_before_the_token_cache(shakespeare_cache: Path):
    assert parity_values(shakespeare_cache) == json.loads(FIXTURE.read_text())


if __name__ == "__main__":
    cache = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("data")
    FIXTURE.write_text(json.dumps(parity_values(cache), indent=2) + "\n")
    print(f"wrote {FIXTURE}")
