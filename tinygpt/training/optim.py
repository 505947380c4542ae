"""The optimizer: AdamW with weight decay on matrices only (or Muon for the blocks' matrices and
AdamW for the rest), linear warmup, then cosine decay."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch.optim.lr_scheduler import LambdaLR

from tinygpt.errors import require
from tinygpt.training.muon import MuonWithAdamW

OPTIMIZERS = ("adamw", "muon")


@dataclass
class OptimConfig:
    """AdamW with linear warmup, then cosine decay to ``min_lr`` at ``trainer.max_steps``.

    ``name: muon`` trains the transformer blocks' weight matrices with Muon at ``muon_lr``
    instead (``tinygpt.training.muon``); the rest stays on AdamW at ``lr``. Both follow the same
    warmup and cosine, each down to ``min_lr / lr`` of its own peak.
    """

    name: str = "adamw"
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = field(default=(0.9, 0.99))
    muon_lr: float = 0.05  # Muon's own scale ("original" adjustment: sqrt(max(1, rows / cols)))
    muon_momentum: float = 0.95

    def __post_init__(self) -> None:
        choices = ", ".join(OPTIMIZERS)
        require(self.name in OPTIMIZERS, f"optim.name must be one of {choices}, got {self.name!r}")
        lr, min_lr, warmup = self.lr, self.min_lr, self.warmup_steps
        require(lr > 0, f"optim.lr must be > 0, got {lr!r}")
        require(0 <= min_lr <= lr, f"optim.min_lr must be in [0, optim.lr], got {min_lr!r}")
        require(warmup >= 0, f"optim.warmup_steps must be >= 0, got {warmup!r}")
        require(self.muon_lr > 0, f"optim.muon_lr must be > 0, got {self.muon_lr!r}")
        momentum = self.muon_momentum
        require(0 <= momentum < 1, f"optim.muon_momentum must be in [0, 1), got {momentum!r}")
        self.betas = tuple(self.betas)


# PyTorch's single-kernel AdamW: one kernel updates every parameter, where the foreach version
# runs several ops per group of tensors, which for a small model is most of the step's cost, on a
# CPU too (benchmarks/bench_moe.py reports the optimizer step, fused or with --foreach-adamw).
FUSED_ADAMW_DEVICES = ("cpu", "cuda")


def fused_adamw(device: torch.device | str) -> bool:
    """Whether AdamW runs fused (one kernel for all parameters) on ``device``."""
    return torch.device(device).type in FUSED_ADAMW_DEVICES


def build_optimizer(
    named_parameters, optim: OptimConfig, max_steps: int, fused: bool = False
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The optimizer ``optim.name`` names over ``named_parameters`` (``module.named_parameters()``),
    and its per-step warmup + cosine schedule."""
    named = [(name, p) for name, p in named_parameters if p.requires_grad]
    adamw = {"lr": optim.lr, "betas": optim.betas, "fused": fused}
    if optim.name == "muon":
        hidden, rest = [], []
        for name, p in named:
            (hidden if _is_hidden_matrix(name, p) else rest).append(p)
        muon_groups = [{"name": "muon", "params": hidden}]
        muon = {
            "lr": optim.muon_lr,
            "weight_decay": optim.weight_decay,
            "momentum": optim.muon_momentum,
        }
        optimizer = MuonWithAdamW(muon_groups, _adamw_groups(rest, optim), muon, adamw)
    else:
        optimizer = torch.optim.AdamW(_adamw_groups([p for _, p in named], optim), **adamw)
    return optimizer, LambdaLR(optimizer, _warmup_cosine(optim, max_steps))


def _is_hidden_matrix(name: str, param: torch.Tensor) -> bool:
    """A transformer block's weight matrix (attention, MLP, MoE router): not an embedding, the
    tied head, a norm, a bias (MoE expert biases are 2-D stacks) or a 3-D stack of experts."""
    return param.dim() == 2 and name.endswith(".weight") and "blocks" in name.split(".")


def _adamw_groups(params: list[torch.Tensor], optim: OptimConfig) -> list[dict]:
    # Weight decay on matrices (linear and embedding weights) only, not biases or norms. The
    # names label the groups' learning rates in TensorBoard (train/lr/decay, train/lr/no_decay).
    return [
        {
            "name": "decay",
            "params": [p for p in params if p.dim() >= 2],
            "weight_decay": optim.weight_decay,
        },
        {"name": "no_decay", "params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def _warmup_cosine(optim: OptimConfig, max_steps: int):
    """The schedule as a factor of each group's peak lr: a linear ramp over the warmup, then the
    cosine to min_lr / lr (one factor, so groups that peak at different rates follow it alike)."""
    warmup = min(optim.warmup_steps, max_steps - 1)
    floor = optim.min_lr / optim.lr

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(step - warmup, max_steps - warmup) / (max_steps - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def adopt_older_schedule(state: dict) -> dict:
    """A scheduler state saved before the schedule was one LambdaLR (a SequentialLR of LinearLR
    and CosineAnnealingLR, or the cosine alone), as LambdaLR loads it: it follows the same curve
    from the step it reached, so runs saved then resume."""
    if "lr_lambdas" in state:
        return state
    lrs = state["_last_lr"]
    return {"last_epoch": state["last_epoch"], "_last_lr": lrs, "lr_lambdas": [None] * len(lrs)}
