"""The optimizer: AdamW with weight decay on matrices only, linear warmup, then cosine decay."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

from tinygpt.errors import ConfigError


@dataclass
class OptimConfig:
    """AdamW with linear warmup, then cosine decay to ``min_lr`` at ``trainer.max_steps``."""

    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = field(default=(0.9, 0.99))

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr!r}")
        if not 0 <= self.min_lr <= self.lr:
            raise ConfigError(f"optim.min_lr must be in [0, optim.lr], got {self.min_lr!r}")
        if self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps!r}")
        self.betas = tuple(self.betas)


# PyTorch's single-kernel AdamW: one kernel updates every parameter, where the foreach version
# runs several ops per group of tensors, which for a small model is most of the step's cost, on a
# CPU too (benchmarks/bench_moe.py reports the optimizer step, fused or with --foreach-adamw).
FUSED_ADAMW_DEVICES = ("cpu", "cuda")


def fused_adamw(device: torch.device | str) -> bool:
    """Whether AdamW runs fused (one kernel for all parameters) on ``device``."""
    return torch.device(device).type in FUSED_ADAMW_DEVICES


def build_optimizer(
    parameters, optim: OptimConfig, max_steps: int, fused: bool = False
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW with weight decay on matrices only, and its per-step warmup + cosine schedule."""
    params = [p for p in parameters if p.requires_grad]
    # Weight decay on matrices (linear and embedding weights) only, not biases or norms. The
    # names label the groups' learning rates in TensorBoard (train/lr/decay, train/lr/no_decay).
    groups = [
        {
            "name": "decay",
            "params": [p for p in params if p.dim() >= 2],
            "weight_decay": optim.weight_decay,
        },
        {"name": "no_decay", "params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, fused=fused)
    warmup = min(optim.warmup_steps, max_steps - 1)
    cosine = CosineAnnealingLR(optimizer, T_max=max_steps - warmup, eta_min=optim.min_lr)
    if warmup == 0:
        return optimizer, cosine
    ramp = LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
    return optimizer, SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])
