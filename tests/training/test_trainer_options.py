"""Every `trainer` option composes, and each one that can run on this CPU trains a few steps."""

from types import SimpleNamespace

import pytest
import torch
from helpers import CONF, assert_clipped, compose_task, train_in_process, vocab_loss
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.plugins.precision import FSDPPrecision
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from tinygpt.cli.resolvers import auto_precision
from tinygpt.data.tokenizer import CharTokenizer
from tinygpt.models import TinyGPTConfig
from tinygpt.training.module import TinyGPTModule

# How each option is checked here, and why where it cannot simply run.
RUNS_HERE = {
    "cpu": [],
    "default": [],  # accelerator auto: this CPU, 32-true (bf16-mixed on a GPU)
    # No CUDA here; everything else of the option (bf16-mixed, clipping) runs on the CPU.
    "gpu": ["trainer.accelerator=cpu"],
}
ELSEWHERE = {
    "ddp": "trains with 2 CPU processes in tests/training/test_ddp.py, in bf16-mixed",
    "fsdp": "Lightning refuses FSDP without a GPU, and so does torch's FSDP itself "
    "('FSDP needs a non-CPU accelerator device'): composition only",
}
EXPECTED_PRECISION = {"cpu": "32-true", "default": auto_precision(), "gpu": "bf16-mixed"}


def test_every_trainer_option_is_checked_here():
    options = {p.stem for p in (CONF / "trainer").glob("*.yaml")}
    assert options == set(RUNS_HERE) | set(ELSEWHERE)


@pytest.mark.parametrize("option", sorted(RUNS_HERE))
def test_trainer_option_trains_a_few_steps(option, tiny_text_file, tmp_path):
    summary, probe = train_in_process(
        tmp_path / "run", tiny_text_file, f"trainer={option}", *RUNS_HERE[option]
    )
    assert probe["precision"] == EXPECTED_PRECISION[option]
    assert probe["fused"] is True
    assert_clipped(probe)
    assert summary["steps"] == 30
    assert summary["final_val_loss"] < vocab_loss(tiny_text_file) - 0.5


def test_ddp_option_composes_two_processes(tmp_path):
    cfg = compose_task("train", ["trainer=ddp"], tmp_path)
    assert (cfg.trainer.strategy, cfg.trainer.devices) == ("ddp", 2)
    trainer = instantiate(cfg.trainer, logger=False)
    assert trainer.world_size == 2
    assert trainer.gradient_clip_val == 1.0


def test_fsdp_option_composes_and_needs_a_gpu(tmp_path):
    cfg = compose_task("train", ["trainer=fsdp"], tmp_path)
    assert (cfg.trainer.strategy, cfg.trainer.precision) == ("fsdp", "bf16-mixed")
    assert cfg.trainer.gradient_clip_val == 1.0
    if not torch.cuda.is_available():
        with pytest.raises(InstantiationException, match="`fsdp` requires a GPU accelerator"):
            instantiate(cfg.trainer, accelerator="cpu", logger=False)


class RootModule:
    """Stands for FSDP's wrapped root module: records the clip it is asked for."""

    def __init__(self) -> None:
        self.clipped: list[float] = []

    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        self.clipped.append(max_norm)
        return torch.tensor(0.0)


def test_fsdp_clips_by_norm_through_its_root_module():
    # FSDP cannot run here (above), so its branch of the clipping hook is checked on its own:
    # Lightning's FSDP plugin refuses to clip by norm, since each rank holds a shard of the
    # gradients; FSDP's root module computes the global norm and clips.
    precision = FSDPPrecision("bf16-mixed")
    with pytest.raises(MisconfigurationException, match="'norm'` is currently not supported"):
        precision.clip_gradients(None, 1.0, "norm")
    tokenizer = CharTokenizer.from_text("abcdefgh")
    module = TinyGPTModule(TinyGPTConfig(vocab_size=tokenizer.vocab_size), tokenizer)
    root = RootModule()
    module.trainer = SimpleNamespace(
        strategy=FSDPStrategy(), precision_plugin=precision, model=root
    )
    module.configure_gradient_clipping(None, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
    assert root.clipped == [1.0]
