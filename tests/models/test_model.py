import math

import pytest
import torch

from tinygpt.errors import ConfigError
from tinygpt.models import TinyGPT, TinyGPTConfig, evaluating


def test_dropout_applies_in_training_only():
    torch.manual_seed(0)
    model = TinyGPT(TinyGPTConfig(vocab_size=20, block_size=8, dropout=0.5))
    plain = TinyGPT(TinyGPTConfig(vocab_size=20, block_size=8))
    plain.load_state_dict(model.state_dict())
    idx = torch.randint(0, 20, (2, 8))
    assert not torch.equal(model(idx)[0], model(idx)[0])  # a new mask each forward
    torch.testing.assert_close(model.eval()(idx)[0], plain.eval()(idx)[0], atol=0, rtol=0)


def test_a_default_model_has_the_notebooks_parameter_count():
    # The notebook's GPT (65 characters, context 32, 64 dimensions, 2 blocks of a 4x MLP, tied
    # embeddings, biases) counted layer by layer: docs/configuration.md's "about 106,000".
    v, t, c, layers = 65, 32, 64, 2
    block = 2 * 2 * c + (c * 3 * c + 3 * c) + (c * c + c) + (c * 4 * c + 4 * c) + (4 * c * c + c)
    model = TinyGPT(TinyGPTConfig())
    assert sum(p.numel() for p in model.parameters()) == v * c + t * c + layers * block + 2 * c
    assert sum(p.numel() for p in model.parameters()) == 106_304
    _, weights = model.forward_with_attention(torch.zeros(1, t, dtype=torch.long))
    assert [w.shape for w in weights] == [(1, 4, t, t)] * layers  # 4 heads, a context of 32


def test_output_shapes_and_loss():
    model = TinyGPT(TinyGPTConfig(vocab_size=65))
    idx = torch.randint(0, 65, (3, 32))
    logits, loss = model(idx)
    assert logits.shape == (3, 32, 65)
    assert loss is None
    _, loss = model(idx, torch.randint(0, 65, (3, 32)))
    assert loss.ndim == 0


def test_untrained_loss_is_close_to_uniform():
    model = TinyGPT(TinyGPTConfig(vocab_size=65))
    idx = torch.randint(0, 65, (16, 32))
    _, loss = model(idx, torch.randint(0, 65, (16, 32)))
    assert abs(loss.item() - math.log(65)) < 0.1


def test_embeddings_are_tied():
    model = TinyGPT(TinyGPTConfig())
    assert model.lm_head.weight is model.wte.weight


def test_overfits_one_batch():
    model = TinyGPT(TinyGPTConfig(vocab_size=20, block_size=16))
    idx = torch.randint(0, 20, (4, 16))
    targets = torch.randint(0, 20, (4, 16))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):
        _, loss = model(idx, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


def test_attention_weights_match_the_fast_path():
    model = TinyGPT(TinyGPTConfig(vocab_size=65)).eval()
    idx = torch.randint(0, 65, (2, 32))
    logits, _ = model(idx)
    logits_explicit, weights = model.forward_with_attention(idx)
    assert torch.allclose(logits, logits_explicit, atol=1e-5)
    assert len(weights) == 2
    for layer in weights:
        assert layer.shape == (2, 4, 32, 32)
        assert torch.allclose(layer.sum(-1), torch.ones(2, 4, 32), atol=1e-6)
        assert torch.all(layer.triu(diagonal=1) == 0)  # causal: nothing from the future


def test_sequence_longer_than_block_size_is_refused():
    model = TinyGPT(TinyGPTConfig(block_size=8))
    with pytest.raises(ValueError, match="longer than block_size 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_layer": 0}, "model.n_layer must be an integer >= 1"),
        ({"block_size": 0}, "model.block_size must be an integer >= 1"),
        ({"n_embd": 30, "n_head": 4}, "divisible"),
        ({"dropout": 1.0}, "model.dropout"),
        ({"ffn": "sparse"}, "model.ffn"),
    ],
)
def test_bad_config_values_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TinyGPTConfig(**kwargs)


def test_evaluating_runs_the_body_in_eval_mode_and_restores_the_mode():
    model = TinyGPT(TinyGPTConfig(vocab_size=20, block_size=16, dropout=0.5))
    with evaluating(model) as inside:
        assert inside is model and not model.training and not model.blocks[0].training
    assert model.training and model.blocks[0].training
    with pytest.raises(KeyError), evaluating(model):
        raise KeyError("a failing body")
    assert model.training  # restored after an error too
    model.eval()
    with evaluating(model):
        pass
    assert not model.training  # a model in eval mode stays there


def test_weights_saved_before_block_ffn_was_named_mlp_load_into_ffn():
    model = TinyGPT(TinyGPTConfig())
    saved = {key.replace(".ffn.", ".mlp."): value for key, value in model.state_dict().items()}
    assert any(".mlp." in key for key in saved)
    loaded = TinyGPT(TinyGPTConfig())
    loaded.load_state_dict(saved)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
