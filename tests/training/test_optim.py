import math

import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

from tinygpt.errors import ConfigError
from tinygpt.models import TinyGPT, TinyGPTConfig
from tinygpt.training.module import OptimConfig, build_optimizer
from tinygpt.training.optim import adopt_older_schedule


def lrs_over(optim: OptimConfig, max_steps: int) -> list[float]:
    model = TinyGPT(TinyGPTConfig())
    optimizer, scheduler = build_optimizer(model.named_parameters(), optim, max_steps)
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


@pytest.mark.parametrize("warmup", [10, 0])
def test_a_schedule_saved_before_it_was_one_lambda_resumes_on_the_same_curve(warmup):
    # Until this round: a SequentialLR of LinearLR then CosineAnnealingLR (the cosine alone
    # without warmup), as checkpoints of earlier runs hold it.
    optim, max_steps, saved_at = OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=warmup), 60, 25
    model = TinyGPT(TinyGPTConfig())
    old_optimizer = torch.optim.AdamW(model.parameters(), lr=optim.lr)
    cosine = CosineAnnealingLR(old_optimizer, T_max=max_steps - warmup, eta_min=optim.min_lr)
    old = cosine
    if warmup:
        ramp = LinearLR(old_optimizer, start_factor=1 / (warmup + 1), total_iters=warmup)
        old = SequentialLR(old_optimizer, [ramp, cosine], milestones=[warmup])
    for _ in range(saved_at):
        old_optimizer.step()
        old.step()
    optimizer, scheduler = build_optimizer(model.named_parameters(), optim, max_steps)
    scheduler.load_state_dict(adopt_older_schedule(old.state_dict()))
    resumed = []
    for _ in range(max_steps - saved_at):
        resumed.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert resumed == pytest.approx(lrs_over(optim, max_steps)[saved_at:], rel=1e-6)


def test_weight_decay_on_matrices_only():
    model = TinyGPT(TinyGPTConfig())
    optimizer, _ = build_optimizer(model.named_parameters(), OptimConfig(weight_decay=0.1), 10)
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


@pytest.mark.parametrize("ffn", ["dense", "moe"])
def test_muon_takes_the_blocks_matrices_and_adamw_the_rest(ffn):
    model = TinyGPT(TinyGPTConfig(ffn=ffn))
    optimizer, _ = build_optimizer(model.named_parameters(), OptimConfig(name="muon"), 10)
    muon, decay, no_decay = optimizer.param_groups
    assert (muon["name"], decay["name"], no_decay["name"]) == ("muon", "decay", "no_decay")
    ids = {name: id(p) for name, p in model.named_parameters()}
    hidden = {
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.startswith("blocks.")
    }
    assert {id(p) for p in muon["params"]} == {ids[n] for n in hidden}
    # qkv and the attention output; the MLP's two matrices, or the MoE router (its experts are
    # 3-D stacks, which Muon cannot take, and their biases are not matrices to orthogonalise).
    assert len(hidden) == 2 * (4 if ffn == "dense" else 3)
    assert ids["wte.weight"] in {id(p) for p in decay["params"]}  # the tied head too
    every = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(every) == sorted(ids.values())  # each parameter once


def test_muon_and_adamw_groups_follow_one_schedule_to_their_own_floors():
    optim = OptimConfig(name="muon", lr=1e-3, min_lr=1e-4, warmup_steps=10, muon_lr=0.05)
    model = TinyGPT(TinyGPTConfig())
    optimizer, scheduler = build_optimizer(model.named_parameters(), optim, 110)
    adamw_lrs = lrs_over(OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10), max_steps=110)
    for step in range(110):
        muon, decay, no_decay = (group["lr"] for group in optimizer.param_groups)
        assert decay == no_decay == pytest.approx(adamw_lrs[step], rel=1e-9)
        assert muon == pytest.approx(decay * 50, rel=1e-9)  # the same shape at Muon's scale
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(
        0.005 + 0.5 * 0.045 * (1 + math.cos(math.pi * 100 / 100)), rel=1e-6
    )


def test_muon_with_adamw_resumes_from_its_state_dict_exactly():
    def train(steps: range, model, optimizer, scheduler) -> None:
        for step in steps:
            torch.manual_seed(step)
            _, loss = model(torch.randint(65, (4, 32)), torch.randint(65, (4, 32)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()

    def fresh():
        torch.manual_seed(0)
        model = TinyGPT(TinyGPTConfig())
        optim = OptimConfig(name="muon", warmup_steps=2)
        return (model, *build_optimizer(model.named_parameters(), optim, 8))

    reference = fresh()
    train(range(8), *reference)
    interrupted = fresh()
    train(range(4), *interrupted)
    saved = [interrupted[0].state_dict(), interrupted[1].state_dict(), interrupted[2].state_dict()]
    resumed = fresh()
    for part, state in zip(resumed, saved, strict=True):
        part.load_state_dict(state)
    # Both inner optimizers see the loaded groups and state (the scheduler's lr included).
    assert resumed[1].muon.param_groups[0] is resumed[1].param_groups[0]
    assert resumed[1].adamw.state is resumed[1].muon.state is resumed[1].state
    train(range(4, 8), *resumed)
    for (name, want), got in zip(
        reference[0].state_dict().items(), resumed[0].state_dict().values(), strict=True
    ):
        assert torch.equal(want, got), name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "sgd"}, "optim.name must be one of adamw, muon, got 'sgd'"),
        ({"muon_lr": 0}, "optim.muon_lr must be > 0"),
        ({"muon_momentum": 1.0}, "optim.muon_momentum must be in"),
    ],
)
def test_bad_muon_values_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        OptimConfig(**kwargs)
