"""Mean negative log-likelihood per character, against direct computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from tinygpt.analysis.likelihood import SampledEntropy, entropy, mean_nll
from tinygpt.data.tokenizer import CharTokenizer
from tinygpt.data.windows import ValidationBatches
from tinygpt.generation import Decoder, generate_ids, make_generator
from tinygpt.generation.sampling import filter_logits
from tinygpt.models import TinyGPT, TinyGPTConfig

TEXT = "to be or not to be, that is the question: whether 'tis nobler in the mind to suffer"


def make_model(block_size: int = 16) -> TinyGPT:
    tokenizer = CharTokenizer.from_text(TEXT)
    torch.manual_seed(0)
    model = TinyGPT(TinyGPTConfig(vocab_size=tokenizer.vocab_size, block_size=block_size))
    model.tokenizer = tokenizer
    return model.eval()


def per_position_nll(model: TinyGPT, text: str) -> list[float]:
    """Character t's NLL given the (up to block_size) characters before it, one at a time."""
    ids = model.tokenizer.encode(text)
    block = model.config.block_size
    out = []
    with torch.no_grad():
        for t in range(1, len(ids)):
            context = ids[max(0, t - block) : t]
            logits, _ = model(context[None])
            out.append(F.cross_entropy(logits[0, -1], ids[t]).item())
    return out


def test_zero_embeddings_give_uniform_predictions():
    model = make_model()
    with torch.no_grad():
        model.wte.weight.zero_()  # tied head: every logit is 0
    assert mean_nll(model, TEXT) == pytest.approx(math.log(model.tokenizer.vocab_size), rel=1e-6)


def test_short_text_is_one_window():
    model = make_model(block_size=16)
    text = TEXT[:12]
    ids = model.tokenizer.encode(text)
    with torch.no_grad():
        _, loss = model(ids[:-1][None], ids[1:][None])
    assert mean_nll(model, text) == pytest.approx(loss.item(), rel=1e-5)


def test_stride_one_gives_every_character_the_full_context():
    model = make_model(block_size=8)
    expected = per_position_nll(model, TEXT)
    assert mean_nll(model, TEXT, stride=1) == pytest.approx(sum(expected) / len(expected), rel=1e-5)


def test_stride_block_size_is_the_validation_loss_of_non_overlapping_windows():
    model = make_model(block_size=8)
    text = TEXT[: 8 * 10 + 1]  # exactly ten windows of 8 targets
    batches = ValidationBatches(model.tokenizer.encode(text), block_size=8, batch_size=10)
    assert len(batches) == 1
    inputs, targets = batches[0]
    assert len(inputs) == 10
    with torch.no_grad():
        _, loss = model(inputs, targets)
    assert mean_nll(model, text, stride=8) == pytest.approx(loss.item(), rel=1e-5)


def test_default_stride_is_half_a_window_and_model_mode_is_restored():
    model = make_model(block_size=8).train()
    value = mean_nll(model, TEXT)
    assert model.training
    assert value == mean_nll(model, TEXT, stride=4)


def test_bad_arguments():
    model = make_model(block_size=8)
    with pytest.raises(ValueError, match="stride"):
        mean_nll(model, TEXT, stride=9)
    with pytest.raises(ValueError, match="at least 2"):
        mean_nll(model, "t")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        mean_nll(model, "to QQ")


def test_entropy_of_uniform_is_log_v_and_of_one_hot_is_zero():
    V = 7
    probs = torch.stack([torch.full((V,), 1 / V), torch.eye(V)[2]])
    torch.testing.assert_close(entropy(probs), torch.tensor([math.log(V), 0.0]))
    assert entropy(torch.tensor([0.5, 0.5, 0.0])).item() == pytest.approx(math.log(2))


@pytest.mark.parametrize(
    "params",
    [Decoder(), Decoder(temperature=0.0), Decoder(0.8, top_k=5, top_p=0.9)],
    ids=["sampling", "greedy", "combined"],
)
def test_sampled_entropy_sees_the_distribution_drawn_from_and_changes_no_token(params):
    model = make_model()
    ids = model.tokenizer.encode("to be or")[None].repeat(3, 1)
    plain = generate_ids(model, ids, 20, params, make_generator(5))
    seen = []
    observed = SampledEntropy()

    def observe(probs):
        seen.append(probs.clone())
        observed(probs)

    watched = generate_ids(model, ids, 20, params, make_generator(5), observe=observe)
    torch.testing.assert_close(watched, plain)  # the same tokens with the hook
    assert len(seen) == 20 and seen[0].shape == (3, model.config.vocab_size)
    # The first step's distribution: the prompt's last logits, processed as the decoder does.
    with torch.no_grad():
        logits = model(ids)[0][:, -1]
    torch.testing.assert_close(seen[0], filter_logits(logits, params).softmax(-1))
    per_row = observed.per_row()
    assert len(per_row) == 3
    expected = torch.stack([entropy(p) for p in seen]).mean(0)
    torch.testing.assert_close(torch.tensor(per_row), expected)
    if params.greedy:
        assert per_row == [0.0, 0.0, 0.0]
    else:
        assert all(0 < h < math.log(model.config.vocab_size) for h in per_row)


def test_sampled_entropy_of_an_untouched_uniform_model_is_log_v():
    model = make_model()
    with torch.no_grad():  # zero output weights and bias: every next character equally likely
        model.lm_head.weight.zero_()
    observed = SampledEntropy()
    generate_ids(model, model.tokenizer.encode("to")[None], 10, observe=observed)
    assert observed.per_row() == [pytest.approx(math.log(model.config.vocab_size))]
    assert SampledEntropy().per_row() == []
