import math

import pytest
import torch

from tinygpt.errors import ConfigError
from tinygpt.models import TinyGPT, TinyGPTConfig
from tinygpt.training.module import OptimConfig, build_optimizer


def lrs_over(optim: OptimConfig, max_steps: int) -> list[float]:
    model = TinyGPT(TinyGPTConfig())
    optimizer, scheduler = build_optimizer(model.parameters(), optim, max_steps)
    lrs = []
    for _ in range(max_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_linear_warmup_then_cosine_to_min_lr():
    lrs = lrs_over(OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10), max_steps=110)
    assert lrs[0] == pytest.approx(1e-3 / 11)
    assert lrs[5] == pytest.approx(1e-3 / 11 * (1 + 5 * 10 / 10))  # linear ramp
    assert lrs[10] == pytest.approx(1e-3)  # peak when warmup ends
    # Halfway through the cosine the lr is midway between peak and minimum.
    assert lrs[60] == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4), rel=1e-6)
    assert lrs[-1] == pytest.approx(1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi * 99 / 100)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_weight_decay_on_matrices_only():
    model = TinyGPT(TinyGPTConfig())
    optimizer, _ = build_optimizer(model.parameters(), OptimConfig(weight_decay=0.1), 10)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"])
    assert all(p.dim() == 1 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"lr": 0}, "optim.lr"), ({"min_lr": 1.0}, "optim.min_lr"), ({"warmup_steps": -1}, "warmup")],
)
def test_bad_optimizer_values_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        OptimConfig(**kwargs)


def test_no_warmup_is_pure_cosine():
    lrs = lrs_over(OptimConfig(lr=1e-3, min_lr=0.0, warmup_steps=0), max_steps=10)
    assert lrs[0] == pytest.approx(1e-3)
    assert torch.tensor(lrs).diff().le(0).all()
