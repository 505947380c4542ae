"""Callbacks tests add by config (``+callbacks.probe._target_=probes.ClippingProbe``).

ClippingProbe records what clipping did to the gradients, each step. It reads them twice: in
``on_before_optimizer_step``, where Lightning has unscaled them (16-mixed) but not clipped them
yet, and in ``on_train_batch_end``, after clipping and the optimizer step (Lightning zeroes them
only at the next step). At the end of training, rank 0 writes ``probe.json`` in ``out_dir``.
FirstBatchProbe records each DDP rank's first batch, and what holds its data. SignalProbe sends
its own process a real signal in the middle of a chosen step or validation.
"""

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import lightning as L
import torch


def _grads(pl_module: L.LightningModule) -> list[torch.Tensor]:
    return [p.grad.detach().float().clone() for p in pl_module.parameters() if p.grad is not None]


class ClippingProbe(L.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.before: list[torch.Tensor] = []
        self.steps: list[dict[str, float]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.before = _grads(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        after = _grads(pl_module)
        norm_before = torch.nn.utils.get_total_norm(self.before).item()
        clip = trainer.gradient_clip_val or float("inf")
        # Clipping by norm multiplies every gradient by one factor (torch's formula, eps included).
        factor = min(1.0, clip / (norm_before + 1e-6))
        pairs = zip(after, self.before, strict=True)
        deviation = max((a - b * factor).abs().max().item() for a, b in pairs)
        self.steps.append(
            {
                "norm_before": norm_before,
                "norm_after": torch.nn.utils.get_total_norm(after).item(),
                "deviation_from_clipped": deviation,
            }
        )

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        optimizer = trainer.optimizers[0]
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        report = {
            "precision": trainer.precision,
            "scaler": None if scaler is None else type(scaler).__name__,
            "fused": bool(optimizer.defaults.get("fused")),
            "clip": trainer.gradient_clip_val,
            "steps": self.steps,
        }
        (self.out_dir / "probe.json").write_text(json.dumps(report))


class FirstBatchProbe(L.Callback):
    """Each rank records its first training batch and the kind and file of its data splits, as
    ``rank<N>.json`` in ``out_dir``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            path = self.out_dir / f"rank{trainer.global_rank}.json"
            splits = (trainer.datamodule.train_data, trainer.datamodule.val_data)
            record = {
                "world": trainer.world_size,
                "batch": batch[0].tolist(),
                "data": [[type(s).__name__, str(s.filename), s.flags.owndata] for s in splits],
            }
            path.write_text(json.dumps(record))


class BatchProbe(L.Callback):
    """Records, per epoch, the digest of each training batch, and the number of batches of each
    validation; rank 0 writes them as ``batches.json`` in ``out_dir`` at the end of training."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.epochs: list[list[str]] = []
        self.validations: list[int] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epochs.append([])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.epochs[-1].append(hashlib.sha256(batch[0].numpy().tobytes()).hexdigest())

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.validations.append(0)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not trainer.sanity_checking:
            self.validations[-1] += 1

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            record = {"epochs": self.epochs, "validations": self.validations}
            (self.out_dir / "batches.json").write_text(json.dumps(record))


class SignalProbe(L.Callback):
    """Sends this process the signal ``name`` (SIGTERM) once, at training step ``step``:
    between its backward pass and its optimizer step (``during="step"``), or after the first
    batch of the validation that follows it (``during="validation"``)."""

    def __init__(self, name: str, step: int, during: str = "step") -> None:
        self.signal = signal.Signals[name]
        self.step, self.during = step, during
        self.sent = False

    def _send(self, trainer, phase: str) -> None:
        # global_step counts finished optimizer steps: step n runs while it is n - 1.
        at = trainer.global_step + (phase == "step")
        if not self.sent and phase == self.during and at == self.step:
            self.sent = True
            os.kill(os.getpid(), self.signal)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._send(trainer, "step")

    def on_validation_batch_end(self, trainer, pl_module, *args, **kwargs) -> None:
        if not trainer.sanity_checking:
            self._send(trainer, "validation")


class HangProbe(L.Callback):
    """Holds this process at training step ``step`` (between its backward pass and its optimizer
    step, as :class:`SignalProbe` counts), after creating the file ``marker``: a test kills it
    there, at a point it chose rather than one a race chose. Once: not where ``marker`` exists."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, Path(marker)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step + 1 == self.step and not self.marker.exists():  # once
            self.marker.touch()
            time.sleep(3600)


class FillDiskProbe(L.Callback):
    """Fills the file system of ``path`` at training step ``step`` (as :class:`SignalProbe`
    counts), writing ``path`` until the OS says it is full: a real full disk at a chosen point."""

    def __init__(self, step: int, path: str) -> None:
        self.step, self.path = step, Path(path)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step + 1 == self.step and not self.path.exists():
            with self.path.open("wb", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                except OSError:
                    pass
