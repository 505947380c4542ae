"""Logits processors, their order and validation, and sampling, against hand-computed values."""

import math

import pytest
import torch

from tinygpt.generation.sampling import (
    Decoder,
    apply_temperature,
    choose,
    filter_logits,
    make_generator,
    min_p_filter,
    next_token,
    repetition_penalty,
    sample,
    sampling_tensors,
    top_k_filter,
    top_p_filter,
)

INF = math.inf
# Probabilities 0.5, 0.3, 0.15, 0.05: cumulative from the least probable 0.05, 0.2, 0.5, 1.0.
PROBS = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
LOGITS = PROBS.log()


def kept(logits: torch.Tensor) -> list[list[bool]]:
    return torch.isfinite(logits).tolist()


def test_temperature_divides_logits():
    out = apply_temperature(torch.tensor([[1.0, 2.0, 4.0]]), 2.0)
    assert out.tolist() == [[0.5, 1.0, 2.0]]


def test_temperature_one_is_identity_and_zero_keeps_only_the_first_argmax():
    logits = torch.tensor([[1.0, 4.0, 4.0, 2.0]])
    assert torch.equal(apply_temperature(logits, 1.0), logits)
    assert apply_temperature(logits, 0.0).tolist() == [[-INF, 4.0, -INF, -INF]]


def test_top_k_keeps_the_k_largest():
    out = top_k_filter(torch.tensor([[1.0, 3.0, 2.0, 0.0], [5.0, 1.0, 2.0, 3.0]]), 2)
    assert out.tolist() == [[-INF, 3.0, 2.0, -INF], [5.0, -INF, -INF, 3.0]]


def test_top_k_larger_than_vocabulary_keeps_everything():
    logits = torch.tensor([[1.0, 3.0, 2.0]])
    assert torch.equal(top_k_filter(logits, 3), logits)
    assert torch.equal(top_k_filter(logits, 100), logits)


def test_top_k_keeps_ties_with_the_kth_value_like_hugging_face():
    out = top_k_filter(torch.tensor([[2.0, 2.0, 1.0]]), 1)
    assert out.tolist() == [[2.0, 2.0, -INF]]


@pytest.mark.parametrize(
    ("top_p", "expected"),
    [
        (1e-9, [True, False, False, False]),  # always at least the most probable token
        (0.4, [True, False, False, False]),  # 0.5 alone reaches 0.4
        (0.75, [True, True, False, False]),  # 0.5 + 0.3 = 0.8 is the first mass >= 0.75
        (0.9, [True, True, True, False]),  # 0.95 >= 0.9
        (1.0, [True, True, True, True]),
    ],
)
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, expected):
    out = top_p_filter(LOGITS, top_p)
    assert kept(out) == [expected]
    assert torch.equal(out[torch.isfinite(out)], LOGITS[torch.isfinite(out)])  # kept: unchanged


def test_top_p_keeps_every_token_tied_with_the_cut_off():
    # Four equal tokens, p=0.5: Hugging Face keeps an arbitrary two of them; we keep all four.
    assert kept(top_p_filter(torch.zeros(1, 4), 0.5)) == [[True] * 4]


@pytest.mark.parametrize(
    ("min_p", "expected"),
    [
        (0.0, [True, True, True, True]),
        (0.2, [True, True, True, False]),  # threshold 0.1 drops 0.05
        (0.5, [True, True, False, False]),  # threshold 0.25 drops 0.15 and 0.05
        (1.0, [True, False, False, False]),
    ],
)
def test_min_p_scales_the_threshold_by_the_top_probability(min_p, expected):
    assert kept(min_p_filter(LOGITS, min_p)) == [expected]


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_once():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    seen = torch.tensor([[0, 1, 1]])  # token 1 twice: penalised once
    assert repetition_penalty(logits, seen, 2.0).tolist() == [[1.0, -2.0, 0.5, 3.0]]
    assert repetition_penalty(logits, seen, 0.5).tolist() == [[4.0, -0.5, 0.5, 3.0]]
    assert torch.equal(repetition_penalty(logits, seen, 1.0), logits)


def test_processors_are_pure():
    logits = LOGITS.clone()
    for out in (
        apply_temperature(logits, 0.0),
        top_k_filter(logits, 1),
        top_p_filter(logits, 0.5),
        min_p_filter(logits, 0.5),
        repetition_penalty(logits, torch.tensor([[0]]), 2.0),
    ):
        assert out is not logits
    assert torch.equal(logits, LOGITS)


def test_filter_logits_applies_temperature_before_top_p():
    # At temperature 0.5 the probabilities sharpen to about 0.685, 0.247, 0.062, 0.007, so
    # top-p 0.6 keeps one token; applied before the temperature it would keep two.
    out = filter_logits(LOGITS, Decoder(temperature=0.5, top_p=0.6))
    assert kept(out) == [[True, False, False, False]]
    assert torch.allclose(out[0, 0], LOGITS[0, 0] / 0.5)
    assert kept(top_p_filter(LOGITS, 0.6)) == [[True, True, False, False]]


def test_filter_logits_applies_temperature_before_min_p():
    # At temperature 2 the ratios to the top probability are 1, 0.77, 0.55, 0.32: min-p 0.5
    # keeps three tokens, where the raw logits (ratios 1, 0.6, 0.3, 0.1) keep two.
    assert kept(filter_logits(LOGITS, Decoder(temperature=2.0, min_p=0.5))) == [
        [True, True, True, False]
    ]


def test_filter_logits_applies_top_k_before_top_p():
    # top-k 2 renormalises 0.5, 0.3 to 0.625, 0.375; top-p 0.6 then keeps only the first.
    # top-p 0.6 on the full distribution would keep two.
    assert kept(filter_logits(LOGITS, Decoder(top_k=2, top_p=0.6))) == [[True, False, False, False]]


def test_filter_logits_defaults_change_nothing():
    assert torch.equal(filter_logits(LOGITS, Decoder()), LOGITS)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -0.1}, "temperature must be a number >= 0, got -0.1"),
        ({"temperature": float("nan")}, "temperature must be a number >= 0, got nan"),
        ({"temperature": float("inf")}, "temperature must be a number >= 0, got inf"),
        ({"temperature": "hot"}, "temperature must be a number >= 0, got 'hot'"),
        ({"top_k": 0}, "top_k must be an integer >= 1, got 0"),
        ({"top_k": 2.5}, "top_k must be an integer >= 1, got 2.5"),
        ({"top_k": True}, "top_k must be an integer >= 1, got True"),
        ({"top_p": 0.0}, "top_p must be a number in (0, 1], got 0.0"),
        ({"top_p": 1.5}, "top_p must be a number in (0, 1], got 1.5"),
        ({"min_p": -0.5}, "min_p must be a number in [0, 1], got -0.5"),
        ({"min_p": 2}, "min_p must be a number in [0, 1], got 2.0"),
    ],
)
def test_a_decoder_rejects_out_of_range_values_naming_them(kwargs, message):
    with pytest.raises(ValueError) as info:
        Decoder(**kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize("penalty", [0.0, -1.0, float("nan")])
def test_repetition_penalty_must_be_positive(penalty):
    with pytest.raises(ValueError, match="repetition_penalty must be a number > 0"):
        Decoder(repetition_penalty=penalty)


def test_seed_must_be_a_non_negative_integer():
    with pytest.raises(ValueError, match="seed must be an integer in"):
        make_generator(-1)
    with pytest.raises(ValueError, match="seed must be an integer in"):
        make_generator("1")


def test_greedy_next_token_is_the_argmax():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 2.9]])
    assert next_token(logits, Decoder(temperature=0.0)).tolist() == [1, 0]


def test_greedy_applies_the_repetition_penalty_first():
    logits = torch.tensor([[2.0, 1.5]])
    history = torch.tensor([[0]])  # token 0 repeated: 2.0 / 2 = 1.0 < 1.5
    params = Decoder(temperature=0.0, repetition_penalty=2.0)
    assert next_token(logits, params, history).tolist() == [1]


def test_sampling_with_a_seed_ignores_the_global_rng():
    logits = torch.randn(8, 65, generator=torch.Generator().manual_seed(0))
    params = Decoder(temperature=1.0)
    draws = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        draws.append(next_token(logits, params, generator=make_generator(7)))
    assert torch.equal(draws[0], draws[1])


def test_sampling_follows_the_filtered_distribution():
    # Top-k 2 over 0.5, 0.3, 0.15, 0.05 samples tokens 0 and 1 with probability 0.625 / 0.375.
    logits = LOGITS.expand(20_000, -1)
    tokens = next_token(logits, Decoder(top_k=2), generator=make_generator(0))
    counts = torch.bincount(tokens, minlength=4).double() / tokens.numel()
    assert counts[2:].tolist() == [0.0, 0.0]
    assert counts[0].item() == pytest.approx(0.625, abs=0.015)


def test_sample_draws_in_proportion_and_never_a_removed_token():
    probs = torch.tensor([[0.2, 0.0, 0.8]]).expand(50_000, -1)
    tokens = sample(probs, make_generator(0))
    frequencies = torch.bincount(tokens, minlength=3).double() / tokens.numel()
    assert frequencies[1].item() == 0.0
    assert frequencies[0].item() == pytest.approx(0.2, abs=0.01)


def test_matches_hugging_face_warpers_on_random_logits():
    """Same filtering as transformers' warpers in its order (random logits have no ties)."""
    hf = pytest.importorskip("transformers.generation.logits_process")
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 65, generator=gen) * 3
    history = torch.randint(0, 65, (16, 20), generator=gen)
    for temperature, top_k, top_p, min_p in [
        (0.7, 10, 0.9, None),
        (1.3, None, 0.5, None),
        (1.0, 5, None, 0.1),
        (0.5, 40, 0.95, 0.05),
    ]:
        warpers = [hf.TemperatureLogitsWarper(temperature)]
        warpers += [hf.TopKLogitsWarper(top_k)] if top_k else []
        warpers += [hf.TopPLogitsWarper(top_p)] if top_p else []
        warpers += [hf.MinPLogitsWarper(min_p)] if min_p else []
        expected = logits
        for warper in warpers:
            expected = warper(history, expected)
        assert torch.equal(
            filter_logits(logits, Decoder(temperature, top_k, top_p, min_p)), expected
        )
    penalty = hf.RepetitionPenaltyLogitsProcessor(1.3)
    assert torch.equal(repetition_penalty(logits, history, 1.3), penalty(history, logits))


@pytest.mark.parametrize(
    "params",
    [
        Decoder(temperature=0.0),
        Decoder(),
        Decoder(temperature=0.8, top_k=10, top_p=0.9),
        Decoder(temperature=1.3, top_p=0.5, min_p=0.1),
        Decoder(temperature=0.5, top_k=3),
        Decoder(top_k=100, min_p=0.2),
    ],
    ids=["greedy", "plain", "notebook", "top-p-min-p", "top-k", "k-past-vocab"],
)
def test_the_compiled_steps_choice_is_next_tokens_choice(params):
    """choose (the compiled step's sampling, parameters as tensors) picks what next_token picks
    from the same generator's noise, on rows whose filters keep anything from 1 to 65 tokens."""
    values, top_k = sampling_tensors(params, 65)
    for seed in range(50):
        logits = torch.randn(4, 65, generator=make_generator(seed)) * (1 + seed % 5)
        expected = next_token(logits, params, generator=make_generator(seed))
        noise = torch.ones(4, 65)
        if not params.greedy:
            noise.exponential_(generator=make_generator(seed))
        assert torch.equal(choose(logits, values, top_k, noise), expected)
