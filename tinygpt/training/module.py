"""The LightningModule: TinyGPT plus its optimizer, schedule, metrics and checkpoint contents."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.strategies import FSDPStrategy
from torchmetrics import MeanMetric

from tinygpt.checkpoint import CHECKPOINT_KEY, checkpoint_entry
from tinygpt.data.tokenizer import CharTokenizer
from tinygpt.data.windows import batch_seed
from tinygpt.errors import CheckpointError, TinyGPTError, require
from tinygpt.models import TinyGPT, TinyGPTConfig
from tinygpt.training.optim import (
    OptimConfig,
    adopt_older_schedule,
    build_optimizer,
    fused_adamw,
)


class NonFiniteLossError(TinyGPTError):
    """Training produced a NaN or infinite loss or weights."""


class TinyGPTModule(L.LightningModule):
    def __init__(
        self,
        model_config: TinyGPTConfig,
        tokenizer: CharTokenizer,
        optim: OptimConfig | None = None,
        run_config: dict[str, Any] | None = None,
        data_fingerprint: str | None = None,
        allow_data_change: bool = False,
    ) -> None:
        """``data_fingerprint``: the training text's, stored in checkpoints; a resume from a
        checkpoint of another text is refused unless ``allow_data_change``."""
        super().__init__()
        require(
            model_config.vocab_size == tokenizer.vocab_size,
            f"model.vocab_size ({model_config.vocab_size}) differs from the tokenizer's "
            f"({tokenizer.vocab_size})",
        )
        self.model = TinyGPT(model_config)
        self.model.tokenizer = tokenizer
        self.optim = optim or OptimConfig()
        self.run_config = run_config or {}
        self.data_fingerprint = data_fingerprint
        self.allow_data_change = allow_data_change
        self.val_loss = MeanMetric()

    def configure_model(self) -> None:
        if self.model.config.compile:
            self.model.compile()  # in place: parameter names, hence checkpoints, stay the same

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # Dropout noise as a function of (seed, step, rank), like the batches: a resumed run
        # continues exactly as the uninterrupted one would have. Only this device's generator
        # is seeded: torch.manual_seed would also queue a CUDA seeding call, with a captured
        # stack trace, on every step of a CPU run.
        seed = batch_seed(self.run_config.get("seed", 0), self.global_step, self.global_rank)
        if self.device.type == "cuda":
            torch.cuda.default_generators[self.device.index or 0].manual_seed(seed)
        else:
            torch.random.default_generator.manual_seed(seed)

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        # A batch is a pair of tensors: moving them directly skips Lightning's generic walk over
        # arbitrary collections, a noticeable share of a step at the notebook's size.
        return tuple(t.to(device, non_blocking=True) for t in batch)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        inputs, targets = batch
        _, loss = self.model(inputs, targets)
        logging_step = self._logging_step()
        # On CPU the check is free; on an accelerator it would stall the pipeline every step,
        # so there it runs at logging steps (and before every checkpoint, below).
        if (loss.device.type == "cpu" or logging_step) and not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"training loss became {loss.item()} at step {self.global_step}; stopped, keeping "
                "the last good checkpoint (try a lower optim.lr)"
            )
        self.log("train/loss", loss, prog_bar=True)
        if self.model.config.ffn == "moe":
            aux_loss = self.model.aux_loss()
            if logging_step:
                self._log_routing()
            return loss + aux_loss
        return loss

    def _logging_step(self) -> bool:
        """Whether Lightning writes this step's logged values to the loggers (its own rule:
        every log_every_n_steps-th step, counted from 1). A value logged on another step would
        be written later, under a later step, and not at all by a run resumed in between."""
        return (self.global_step + 1) % self.trainer.log_every_n_steps == 0

    def _log_routing(self) -> None:
        """Per MoE layer: each expert's share of tokens, router entropy, drops, aux losses."""
        for layer, stats in self.model.moe_stats().items():
            prefix = f"moe/layer{layer}"
            for expert, share in enumerate(stats.load):
                self.log(f"{prefix}/load/expert{expert}", share)
            self.log(f"{prefix}/router_entropy", stats.router_entropy)
            self.log(f"{prefix}/dropped_fraction", stats.dropped_fraction)
            self.log(f"{prefix}/aux_loss", stats.aux_loss.detach())
            self.log(f"{prefix}/z_loss", stats.z_loss.detach())

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # Lightning validates every val_check_interval steps; asking it to stop after the last
        # step makes it validate there too, so every run ends with an exact final val/loss.
        if self.global_step >= self.trainer.max_steps:
            self.trainer.should_stop = True

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        inputs, targets = batch
        _, loss = self.model(inputs, targets)
        # Weighting each batch by its tokens makes the epoch value the exact mean over the split.
        self.val_loss.update(loss, weight=targets.numel())

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_loss("val")

    # The test loop (eval.py) is the validation loop over the DataModule's test split.
    test_step = validation_step

    def on_test_epoch_end(self) -> None:
        self._log_epoch_loss("test")

    def _log_epoch_loss(self, prefix: str) -> None:
        loss = self.val_loss.compute()  # synchronised across DDP ranks by torchmetrics
        self.val_loss.reset()
        # Already identical on every rank; sync_dist only silences Lightning's DDP warning.
        self.log(f"{prefix}/loss", loss, prog_bar=True, sync_dist=True)
        self.log(f"{prefix}/ppl", loss.exp(), sync_dist=True)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # The learning rate is logged by Lightning's LearningRateMonitor (conf/callbacks/).
        if self._logging_step():
            grads = [p.grad for p in self.parameters() if p.grad is not None]
            self.log("train/grad_norm", torch.nn.utils.get_total_norm(grads))

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip as Lightning does, also in the two cases where Lightning itself refuses to."""
        precision = self.trainer.precision_plugin
        by_norm = (gradient_clip_algorithm or "norm") == "norm"
        if gradient_clip_val and by_norm and isinstance(self.trainer.strategy, FSDPStrategy):
            # FSDP shards the gradients: only the wrapped root module knows their global norm.
            self.trainer.model.clip_grad_norm_(gradient_clip_val)
        elif isinstance(precision, MixedPrecision) and precision.scaler is None:
            # bf16-mixed: Lightning's MixedPrecision refuses to clip for the fused AdamW, which
            # "unscales gradients internally", whatever the precision. bf16 has no loss scaler,
            # so the gradients are the true ones: they are clipped by the base plugin's code,
            # which MixedPrecision itself runs once its check passes.
            Precision.clip_gradients(
                precision, optimizer, gradient_clip_val or 0.0, gradient_clip_algorithm or "norm"
            )
        else:
            super().configure_gradient_clipping(
                optimizer, gradient_clip_val, gradient_clip_algorithm
            )

    def configure_optimizers(self):
        max_steps = self.trainer.max_steps
        require(
            max_steps is not None and max_steps >= 1,
            "trainer.max_steps must be set to a positive number of steps",
        )
        # 16-mixed: Lightning divides the loss scale out of the gradients before the hooks, the
        # logged norm and the clipping read them, but not for an optimizer that does it inside
        # its step, as the fused AdamW does. So under a loss scaler AdamW runs foreach.
        scaled = getattr(self.trainer.precision_plugin, "scaler", None) is not None
        fused = fused_adamw(self.device) and not scaled
        named = self.named_parameters()
        optimizer, scheduler = build_optimizer(named, self.optim, max_steps, fused)
        return {
            "optimizer": optimizer,
            # The name is the tag LearningRateMonitor logs under: train/lr/<param group>.
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "train/lr"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise NonFiniteLossError(
                f"weights became non-finite by step {self.global_step}; stopped, keeping the last "
                "good checkpoint (try a lower optim.lr)"
            )
        checkpoint[CHECKPOINT_KEY] = checkpoint_entry(
            self.model.config, self.model.tokenizer, self.run_config, self.data_fingerprint
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a resume that would silently go wrong: a checkpoint of another vocabulary or
        model shape, of another training text, or with another schedule or optimizer."""
        entry = checkpoint.get(CHECKPOINT_KEY)
        if entry is None:
            raise CheckpointError("the checkpoint has no TinyGPT entry; it was not made by TinyGPT")
        if entry["tokenizer"] != self.model.tokenizer.to_dict():
            raise CheckpointError(
                "the checkpoint was trained on another vocabulary than this run's data "
                f"({len(entry['tokenizer']['chars'])} vs {self.model.tokenizer.vocab_size} chars)"
            )
        ours = checkpoint_entry(self.model.config, self.model.tokenizer, {})["model_config"]
        theirs = entry["model_config"]
        differing = sorted(k for k in ours if k != "compile" and theirs.get(k) != ours[k])
        if differing:
            shown = ", ".join(f"model.{k}={theirs.get(k)!r}" for k in differing)
            raise CheckpointError(f"the checkpoint's model differs from this run's: {shown}")
        # Same vocabulary, other text: the batches after the resume would come from it.
        theirs, ours = entry.get("data_fingerprint"), self.data_fingerprint
        if None not in (theirs, ours) and theirs != ours and not self.allow_data_change:
            raise CheckpointError(
                f"the checkpoint was trained on another text than this run's data (same "
                f"vocabulary; sha256 {theirs[:12]}..., this text {ours[:12]}...); add "
                "resume_data_change=allow to continue training on this text anyway"
            )
        self._check_same_schedule(entry.get("config") or {})
        schedules = checkpoint.get("lr_schedulers", [])
        schedules[:] = [adopt_older_schedule(state) for state in schedules]

    def _check_same_schedule(self, saved: dict[str, Any]) -> None:
        """Another trainer.max_steps or optimizer setting: the restored optimizer and cosine
        schedule keep the checkpoint's (its length, lr and betas), whatever this run asks."""
        differing = []
        steps = (saved.get("trainer") or {}).get("max_steps")
        if steps is not None and steps != self.trainer.max_steps:
            differing.append(f"trainer.max_steps={steps} (now {self.trainer.max_steps})")
        for key, theirs in (saved.get("optim") or {}).items():
            ours = getattr(self.optim, key, None)
            if key != "_target_" and _plain(theirs) != _plain(ours):
                differing.append(f"optim.{key}={_plain(theirs)} (now {_plain(ours)})")
        if differing:
            raise CheckpointError(
                f"the checkpoint was trained with {', '.join(differing)}: its optimizer and "
                "learning-rate schedule would not follow the new values; resume with the "
                "checkpoint's, or start a new run"
            )


def _plain(value: Any) -> Any:
    """Config values as compared: a list and a tuple of the same numbers are equal."""
    return list(value) if isinstance(value, (list, tuple)) else value
