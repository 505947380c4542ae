"""The mixture-of-experts feed-forward layer and its wiring into TinyGPT."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tinygpt.checkpoint import checkpoint_entry, load_model
from tinygpt.data.tokenizer import CharTokenizer
from tinygpt.errors import ConfigError
from tinygpt.models import TinyGPT, TinyGPTConfig
from tinygpt.models.gpt import MLP
from tinygpt.models.moe import MoEFeedForward


def make_layer(seed: int = 0, **overrides) -> MoEFeedForward:
    """A small MoE layer with random (not GPT-2 small) weights, so every path matters."""
    torch.manual_seed(seed)
    fields = dict(n_embd=32, n_head=4, ffn="moe") | overrides
    layer = MoEFeedForward(TinyGPTConfig(**fields))
    with torch.no_grad():
        for param in layer.parameters():
            param.normal_(0.0, 0.5)
    return layer


def reference_output(layer: MoEFeedForward, x: torch.Tensor) -> torch.Tensor:
    """Each token through its chosen experts one at a time, in token order, with capacity."""
    E, k = layer.num_experts, layer.top_k
    probs = F.softmax(x @ layer.router.weight.t(), dim=-1)
    gate, expert = probs.topk(k, dim=-1)
    if k > 1:  # top-1 keeps the router probability as its weight (Switch)
        gate = gate / gate.sum(dim=-1, keepdim=True)
    capacity = layer.capacity(x.size(0))
    filled = [0] * E
    out = torch.zeros_like(x)
    for i in range(x.size(0)):
        for j in range(k):
            e = int(expert[i, j])
            if capacity is not None:
                if filled[e] >= capacity:
                    continue  # dropped: contributes nothing
                filled[e] += 1
            h = F.gelu(x[i] @ layer.w_fc[e] + layer.b_fc[e])
            out[i] += gate[i, j] * (h @ layer.w_proj[e] + layer.b_proj[e])
    return out


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("capacity_factor", [None, 0.75])
def test_matches_loop_reference(k: int, capacity_factor: float | None) -> None:
    layer = make_layer(experts_per_token=k, capacity_factor=capacity_factor)
    x = torch.randn(3, 20, 32)
    out = layer(x)
    assert out.shape == x.shape
    with torch.no_grad():
        expected = reference_output(layer, x.view(-1, 32)).view_as(x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    if capacity_factor is not None:
        assert layer.stats().dropped_fraction > 0  # the case really drops something


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("capacity_factor", [None, 0.75])
@pytest.mark.parametrize("bias", [True, False])
def test_gradients_match_loop_reference(k: int, capacity_factor: float | None, bias: bool) -> None:
    layer = make_layer(experts_per_token=k, capacity_factor=capacity_factor, bias=bias)
    x = torch.randn(40, 32, requires_grad=True)
    weights = torch.randn(40, 32)  # a loss whose gradient differs per element
    (layer(x) * weights).sum().backward()
    got = [x.grad] + [p.grad for p in layer.parameters()]
    x.grad = None
    layer.zero_grad()
    reference = reference_output(layer, x) if bias else reference_without_bias(layer, x)
    (reference * weights).sum().backward()
    expected = [x.grad] + [p.grad for p in layer.parameters()]
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, atol=1e-4, rtol=1e-4)


def reference_without_bias(layer: MoEFeedForward, x: torch.Tensor) -> torch.Tensor:
    layer.b_fc = torch.zeros(layer.w_fc.size(0), layer.w_fc.size(2))
    layer.b_proj = torch.zeros(layer.w_proj.size(0), layer.w_proj.size(2))
    try:
        return reference_output(layer, x)
    finally:
        layer.b_fc = layer.b_proj = None


def test_without_bias_matches_reference() -> None:
    layer = make_layer(bias=False, experts_per_token=2)
    x = torch.randn(40, 32)
    out = layer(x)
    with torch.no_grad():
        torch.testing.assert_close(out, reference_without_bias(layer, x), atol=1e-5, rtol=1e-5)


def test_gradients_with_idle_experts() -> None:
    layer = make_layer(num_experts=3)
    with torch.no_grad():
        layer.router.weight.zero_()
        layer.router.weight[1, 0] = 5.0  # every token (x[:, 0] > 0) goes to expert 1
    x = torch.randn(10, 32)
    x[:, 0] = x[:, 0].abs() + 0.5
    x.requires_grad_(True)
    layer(x).sum().backward()
    assert layer.stats().load.tolist() == [0.0, 1.0, 0.0]
    for param in (layer.w_fc, layer.b_fc, layer.w_proj, layer.b_proj):
        assert torch.all(param.grad[[0, 2]] == 0) and param.grad[1].abs().sum() > 0
    assert x.grad.abs().sum() > 0


def hand_routed_layer(k: int = 1, **overrides) -> MoEFeedForward:
    """4 dims, 4 experts, identity router: a token's router logits are the token itself."""
    fields = dict(n_embd=4, n_head=1, ffn="moe", experts_per_token=k) | overrides
    layer = MoEFeedForward(TinyGPTConfig(**fields))
    with torch.no_grad():
        layer.router.weight.copy_(torch.eye(4))
    return layer


def test_load_balancing_loss_matches_formula() -> None:
    layer = hand_routed_layer(aux_loss_coef=0.1)
    x = torch.tensor(
        [[2.0, 0, 0, 0], [0, 3.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1.0], [0.5, 0, 0, 0]]
    )
    layer(x)
    stats = layer.stats()
    f = torch.tensor([3, 1, 0, 1]) / 5  # experts chosen: 0, 1, 0, 3, 0
    P = F.softmax(x, dim=-1).mean(dim=0)
    torch.testing.assert_close(stats.load, f)
    torch.testing.assert_close(stats.aux_loss, 0.1 * 4 * (f * P).sum())


def test_load_balancing_loss_counts_every_assignment_with_top_2() -> None:
    layer = hand_routed_layer(k=2, aux_loss_coef=1.0)
    x = torch.tensor([[3.0, 2.0, 0, 0], [0, 3.0, 2.0, 0]])  # experts {0, 1} and {1, 2}
    layer(x)
    f = torch.tensor([1, 2, 1, 0]) / 4
    P = F.softmax(x, dim=-1).mean(dim=0)
    torch.testing.assert_close(layer.stats().load, f)
    torch.testing.assert_close(layer.stats().aux_loss, 4 * (f * P).sum())


def test_load_balancing_loss_is_the_coefficient_for_uniform_routing() -> None:
    layer = hand_routed_layer(aux_loss_coef=0.01)
    layer(5.0 * torch.eye(4))  # one token per expert; mean router probability uniform
    torch.testing.assert_close(layer.stats().load, torch.full((4,), 0.25))
    torch.testing.assert_close(layer.stats().aux_loss, torch.tensor(0.01))


def test_z_loss_matches_hand_computation() -> None:
    layer = hand_routed_layer(z_loss_coef=0.001)
    rows = [[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0], [-1.0, 5.0, 0.5, 2.0]]
    layer(torch.tensor(rows))
    lse = [math.log(sum(math.exp(v) for v in row)) for row in rows]
    expected = 0.001 * sum(v * v for v in lse) / len(rows)
    assert layer.stats().z_loss.item() == pytest.approx(expected, rel=1e-6)
    assert layer.aux_loss().item() == pytest.approx(
        expected + layer.stats().aux_loss.item(), rel=1e-6
    )


def test_capacity_drops_the_later_tokens_which_output_exactly_zero() -> None:
    layer = hand_routed_layer(capacity_factor=1.0)
    # All 8 tokens prefer expert 0; capacity is ceil(1.0 * 8 / 4) = 2.
    x = torch.zeros(8, 4)
    x[:, 0] = torch.linspace(1.0, 2.0, 8)
    x[:, 1:] = torch.randn(8, 3) * 0.1
    with torch.no_grad():
        layer.b_proj.fill_(0.3)  # a kept token's output is then certainly nonzero
    out = layer(x)
    assert layer.capacity(8) == 2
    assert torch.all(out[2:] == 0)
    assert torch.all(out[:2].abs().sum(dim=-1) > 0)
    assert layer.stats().dropped_fraction.item() == pytest.approx(6 / 8)


def test_capacity_is_computed_from_the_tokens_of_each_call() -> None:
    layer = hand_routed_layer(capacity_factor=2.0)
    assert layer.capacity(1) == 1  # a one-token decoding step is never dropped
    assert layer.capacity(64) == 32
    assert make_layer().capacity(64) is None


def test_gradients_reach_router_and_experts() -> None:
    layer = make_layer(aux_loss_coef=0.0, z_loss_coef=0.0)
    x = torch.randn(64, 32, requires_grad=True)
    layer(x).square().sum().backward()
    # The router learns through the gate weights alone, without the auxiliary losses.
    assert layer.router.weight.grad.abs().sum() > 0
    used = layer.stats().load > 0
    for param in (layer.w_fc, layer.b_fc, layer.w_proj, layer.b_proj):
        per_expert = param.grad.flatten(1).abs().sum(dim=1)
        assert torch.all(per_expert[used] > 0)
    assert x.grad.abs().sum() > 0


def test_aux_losses_have_gradients_into_the_router() -> None:
    layer = make_layer()
    layer(torch.randn(64, 32))
    layer.aux_loss().backward()
    assert layer.router.weight.grad.abs().sum() > 0


def test_router_runs_in_float32_under_bf16_autocast() -> None:
    layer = make_layer(experts_per_token=2)
    x = torch.randn(2, 16, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
        assert layer.router_logits(x.view(-1, 32)).dtype == torch.float32
    assert out.dtype == torch.bfloat16
    assert layer.stats().aux_loss.dtype == torch.float32
    torch.testing.assert_close(out.float(), layer(x), atol=0.2, rtol=0.05)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"num_experts": 0}, "model.num_experts"),
        ({"num_experts": 2, "experts_per_token": 3}, "model.experts_per_token"),
        ({"experts_per_token": 0}, "model.experts_per_token"),
        ({"capacity_factor": 0.0}, "model.capacity_factor"),
        ({"capacity_factor": -1.5}, "model.capacity_factor"),
        ({"aux_loss_coef": -0.1}, "model.aux_loss_coef"),
        ({"z_loss_coef": -1}, "model.z_loss_coef"),
        ({"router_jitter": 1.0}, "model.router_jitter"),
        ({"moe_layers": [0, 2]}, "model.moe_layers"),
        ({"moe_layers": [1, 1]}, "model.moe_layers"),
        ({"moe_layers": "0"}, "model.moe_layers"),
    ],
)
def test_config_validation_names_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        TinyGPTConfig(ffn="moe", **overrides)


def test_dense_model_is_unaffected_by_moe_fields() -> None:
    torch.manual_seed(0)
    plain = TinyGPT(TinyGPTConfig())
    torch.manual_seed(0)
    tweaked = TinyGPT(TinyGPTConfig(num_experts=8, experts_per_token=2, capacity_factor=1.0))
    for a, b in zip(plain.state_dict().values(), tweaked.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    idx = torch.randint(0, 65, (2, 8))
    assert torch.equal(plain(idx)[0], tweaked(idx)[0])
    assert plain.moe_stats() == {}
    assert plain.aux_loss().item() == 0.0
    assert plain.expert_assignments(idx).shape == (0, 2, 8)


def test_moe_layers_selects_blocks() -> None:
    model = TinyGPT(TinyGPTConfig(ffn="moe", n_layer=3, moe_layers=[1]))
    kinds = [type(block.ffn) for block in model.blocks]
    assert kinds == [MLP, MoEFeedForward, MLP]
    assert list(model.moe_modules()) == [1]


def test_moe_gets_gpt2_init() -> None:
    torch.manual_seed(0)
    model = TinyGPT(TinyGPTConfig(ffn="moe", n_layer=4, n_embd=128, n_head=4))
    layer = model.blocks[0].ffn
    assert layer.w_fc.std().item() == pytest.approx(0.02, rel=0.05)
    assert layer.w_proj.std().item() == pytest.approx(0.02 / math.sqrt(8), rel=0.05)
    assert layer.router.weight.std().item() == pytest.approx(0.02, rel=0.2)
    assert torch.all(layer.b_fc == 0) and torch.all(layer.b_proj == 0)


def test_model_stats_aux_loss_and_assignments() -> None:
    torch.manual_seed(0)
    config = TinyGPTConfig(ffn="moe", experts_per_token=2)
    model = TinyGPT(config)
    idx = torch.randint(0, 65, (3, 16))
    _, loss = model(idx, targets=idx)
    stats = model.moe_stats()
    assert list(stats) == [0, 1]
    for s in stats.values():
        assert s.load.shape == (4,)
        assert s.load.sum().item() == pytest.approx(1.0)
        assert 0.0 <= s.router_entropy.item() <= math.log(4) + 1e-6
        assert s.dropped_fraction.item() == 0.0
    total = sum(s.aux_loss + s.z_loss for s in stats.values())
    torch.testing.assert_close(model.aux_loss(), total)
    (loss + model.aux_loss()).backward()

    assignments = model.expert_assignments(idx)
    assert assignments.shape == (2, 3, 16) and assignments.dtype == torch.long
    assert model.training  # restored after the eval-mode analysis pass
    # The top choice is the expert with the largest router probability.
    layer, inputs = model.blocks[0].ffn, []
    layer.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
    model.expert_assignments(idx)
    with torch.no_grad():
        expected = layer.router_logits(inputs[0]).argmax(dim=0)
    assert torch.equal(assignments[0].flatten(), expected)


def test_checkpoint_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    config = TinyGPTConfig(ffn="moe", num_experts=3, experts_per_token=2, moe_layers=[1])
    model = TinyGPT(config).eval()
    tokenizer = CharTokenizer("".join(chr(c) for c in range(32, 97)))
    state = {"model." + k: v for k, v in model.state_dict().items()}
    path = tmp_path / "moe.ckpt"
    torch.save({"state_dict": state, "tinygpt": checkpoint_entry(config, tokenizer, {})}, path)
    loaded = load_model(path)
    assert loaded.config == config
    idx = torch.randint(0, 65, (2, 16))
    with torch.no_grad():
        assert torch.equal(loaded(idx)[0], model(idx)[0])


def test_router_jitter_only_while_training() -> None:
    layer = make_layer(router_jitter=0.5)
    x = torch.randn(16, 32)
    layer.train()
    assert not torch.equal(layer.router_logits(x), layer.router_logits(x))
    layer.eval()
    torch.testing.assert_close(layer.router_logits(x), layer.router.weight @ x.t())
