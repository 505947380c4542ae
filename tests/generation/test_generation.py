"""The generation loop (KV cache against no cache, past the window) and the text API."""

import inspect

import pytest
import torch

from tinygpt.data.tokenizer import CharTokenizer, UnknownCharactersError
from tinygpt.errors import ConfigError, NonFiniteLogitsError
from tinygpt.generation import (
    Decoder,
    generate,
    generate_greedy,
    generate_ids,
    generate_nucleus,
    generate_temperature,
    generate_top_k,
    generateV2,
    loop,
    stream_generate,
    text,
)
from tinygpt.generation.loop import SINGLE_THREAD_MAX_WEIGHTS, refill_length
from tinygpt.generation.sampling import repetition_penalty
from tinygpt.generation.text import STOP_READ_STEPS
from tinygpt.models import TinyGPT, TinyGPTConfig

BLOCK = 8
GREEDY = Decoder(temperature=0.0)


def make_model(chars: str = "\n !,.abcdefghijklmnopqrstuvwxyz", seed: int = 0) -> TinyGPT:
    torch.manual_seed(seed)
    tokenizer = CharTokenizer(chars)
    config = TinyGPTConfig(vocab_size=tokenizer.vocab_size, block_size=BLOCK, n_embd=32)
    model = TinyGPT(config)
    with torch.no_grad():
        # Untrained logits are nearly uniform; scaling the weights spreads them (to about +-6,
        # like a trained model), so greedy choices are not decided by rounding noise.
        for param in model.parameters():
            param.mul_(4)
    model.tokenizer = tokenizer
    return model.eval()


@pytest.fixture(scope="module")
def model() -> TinyGPT:
    return make_model()


def prompt_ids(model: TinyGPT, text: str, batch: int = 1) -> torch.Tensor:
    return model.tokenizer.encode(text).expand(batch, -1)


def cache_context_start(n: int, prompt_len: int, block_size: int) -> int:
    """Index of the first token the cached loop conditions on when choosing token ``n``: the
    refill policy of docs/generation.md ("The KV cache"), written out as the loop's reference."""
    start = max(0, prompt_len - block_size)
    filled = prompt_len - start  # cache positions in use after the prompt
    keep = refill_length(block_size)
    for m in range(prompt_len, n):  # token m has just been chosen; feed it
        if filled < block_size:
            filled += 1
        else:
            start, filled = m + 1 - keep, keep
    return start


def test_cached_greedy_equals_uncached_for_every_token_inside_the_window(model):
    idx = torch.stack([model.tokenizer.encode(p) for p in ("to ", "be,", "or.")])
    new = BLOCK - idx.size(1) + 1  # the last token predicted from a full window
    cached = generate_ids(model, idx, new, GREEDY, use_cache=True)
    uncached = generate_ids(model, idx, new, GREEDY, use_cache=False)
    assert torch.equal(cached, uncached)


def test_cache_context_policy_by_hand():
    # block 8, prompt 3: tokens 3..8 see the whole sequence; token 9 would need 9, so the cache
    # is refilled with the last 4 (5..8) and grows back to 8 (5..12) for token 13; token 14
    # refills with 10..13.
    starts = [cache_context_start(n, 3, 8) for n in range(3, 18)]
    assert starts == [0] * 6 + [5] * 5 + [10] * 4


def test_generation_past_the_window_follows_the_refill_policy(model):
    idx = prompt_ids(model, "the ")
    seq = generate_ids(model, idx, 4 * BLOCK, GREEDY, use_cache=True)
    assert seq.shape == (1, 4 + 4 * BLOCK)
    with torch.no_grad():
        for n in range(4, seq.size(1)):
            start = cache_context_start(n, 4, BLOCK)
            expected = model(seq[:, start:n])[0][0, -1].argmax()
            assert seq[0, n] == expected, f"token {n} (context from {start})"
    uncached = generate_ids(model, idx, 4 * BLOCK, GREEDY, use_cache=False)
    inside = BLOCK + 1  # prompt + the new tokens whose context fits the window
    assert torch.equal(seq[:, :inside], uncached[:, :inside])


def test_uncached_generation_crops_to_the_last_block(model):
    idx = prompt_ids(model, "abc")
    seq = generate_ids(model, idx, 2 * BLOCK, GREEDY, use_cache=False)
    with torch.no_grad():
        for n in range(3, seq.size(1)):
            assert seq[0, n] == model(seq[:, max(0, n - BLOCK) : n])[0][0, -1].argmax()


@pytest.mark.parametrize("use_cache", [True, False])
def test_prompt_longer_than_the_window(model, use_cache):
    text = "a long prompt, longer than the window"
    out = generate_greedy(model, text, 5, use_cache=use_cache)
    with torch.no_grad():
        expected = model(model.tokenizer.encode(text)[None, -BLOCK:])[0][0, -1].argmax()
    assert out[: len(text)] == text
    assert out[len(text)] == model.tokenizer.chars[expected]


def test_greedy_is_the_same_with_and_without_cache_text_api(model):
    assert generate_greedy(model, "ab", BLOCK - 1) == generate_greedy(
        model, "ab", BLOCK - 1, use_cache=False
    )


def test_same_seed_same_text_whatever_the_global_rng(model):
    texts = []
    for global_seed in (0, 123):
        torch.manual_seed(global_seed)
        texts.append(generate(model, "to be", 40, temperature=1.0, seed=7))
    assert texts[0] == texts[1]
    assert generate(model, "to be", 40, seed=8) != texts[0]


def test_a_generator_can_stand_in_for_the_seed(model):
    from_seed = generate(model, "to", 20, seed=3)
    from_generator = generate(model, "to", 20, seed=torch.Generator().manual_seed(3))
    assert from_seed == from_generator


def test_num_samples_are_a_batch_of_different_texts(model):
    texts = generate(model, "to", 30, temperature=1.5, seed=1, num_samples=4)
    assert isinstance(texts, list) and len(texts) == 4
    assert all(t.startswith("to") and len(t) == 32 for t in texts)
    assert len(set(texts)) > 1
    assert generate(model, "to", 30, temperature=1.5, seed=1, num_samples=4) == texts


def test_the_result_is_shaped_like_the_prompt_and_num_samples(model):
    text = generate(model, "to", 3, seed=0)  # the notebook's call: one string back
    assert isinstance(text, str) and len(text) == 5 and text.startswith("to")
    samples = generate(model, "to", 3, seed=0, num_samples=3)
    assert len(samples) == 3 and all(isinstance(t, str) for t in samples)
    per_prompt = generate(model, ["to", "be"], 3, seed=0)
    assert [t[:2] for t in per_prompt] == ["to", "be"] and all(len(t) == 5 for t in per_prompt)
    nested = generate(model, ("to", "be"), 3, seed=0, num_samples=2)  # a tuple is a list too
    assert [[t[:2] for t in samples] for samples in nested] == [["to", "to"], ["be", "be"]]
    assert generate(model, ["to"], 3, seed=0) == [text]  # one row in the batch either way


def test_stream_yields_the_same_text_as_generate(model):
    kwargs = dict(temperature=0.9, top_k=5, seed=11, num_samples=2)
    pieces = list(stream_generate(model, "we ", 3 * BLOCK, **kwargs))
    assert len(pieces) == 3 * BLOCK and all(len(step) == 2 for step in pieces)
    streamed = ["we " + "".join(step[i] for step in pieces) for i in range(2)]
    assert streamed == generate(model, "we ", 3 * BLOCK, **kwargs)
    # help() and a notebook's completion list generate's parameters for the stream too
    shown = inspect.signature(stream_generate).parameters
    assert list(shown) == list(inspect.signature(generate).parameters)


def test_named_variants_are_generate_with_their_parameters(model):
    greedy = generate(model, "a", 20, temperature=0.0)
    assert generate_greedy(model, "a", 20) == greedy
    assert generate_top_k(model, "a", 20, top_k=1, seed=0) == greedy
    assert generate_nucleus(model, "a", 20, top_p=1e-6, seed=0) == greedy
    kwargs = {"temperature": 0.8, "top_k": 10, "top_p": 0.9, "seed": 5}
    assert generate_temperature(model, "a", 20, 0.7, seed=5) == generate(
        model, "a", 20, 0.7, seed=5
    )
    assert generateV2(model, "a", 20, **kwargs) == generate(model, "a", 20, **kwargs)


def test_min_p_one_is_greedy(model):
    assert generate(model, "a", 20, min_p=1.0, seed=0) == generate_greedy(model, "a", 20)


def test_repetition_penalty_counts_prompt_and_generated_tokens(model):
    text = generate_greedy(model, "abab", 2 * BLOCK, repetition_penalty=1.8, use_cache=False)
    seq = model.tokenizer.encode("abab")[None]
    with torch.no_grad():
        for _ in range(2 * BLOCK):
            logits = model(seq[:, -BLOCK:])[0][:, -1]
            token = repetition_penalty(logits, seq, 1.8).argmax(-1, keepdim=True)
            seq = torch.cat([seq, token], dim=1)
    assert text == model.tokenizer.decode(seq[0])
    assert text != generate_greedy(model, "abab", 2 * BLOCK, use_cache=False)


def test_zero_new_tokens_returns_the_prompt(model):
    assert generate(model, "to be", 0, seed=0) == "to be"
    assert generate(model, ["to", "be"], 0, seed=0) == ["to", "be"]
    assert list(stream_generate(model, "to be", 0)) == []


def test_empty_prompt_starts_from_a_line_break_not_returned(model):
    empty = generate_greedy(model, "", 10)
    newline = generate_greedy(model, "\n", 10)
    assert len(empty) == 10
    assert empty == newline[1:]


def test_empty_prompt_without_a_line_break_in_the_vocabulary_is_refused():
    with pytest.raises(ConfigError, match="prompt is empty"):
        generate(make_model(chars="abc"), "", 5)


def test_unknown_prompt_characters_are_named(model):
    with pytest.raises(UnknownCharactersError, match=r"'Q', '~'"):
        generate(model, "Quick~", 5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_new_tokens": -1}, "max_new_tokens must be an integer in [0, 1000000], got -1"),
        ({"max_new_tokens": 10**7}, "max_new_tokens must be an integer in [0, 1000000], got"),
        ({"max_new_tokens": 2.5}, "max_new_tokens must be an integer in [0, 1000000], got 2.5"),
        ({"num_samples": 0}, "num_samples must be an integer in [1, 10000], got 0"),
        ({"temperature": -1.0}, "temperature must be a number >= 0"),
        ({"top_k": 0}, "top_k must be an integer >= 1"),
        ({"top_p": 2.0}, "top_p must be a number in (0, 1]"),
        ({"min_p": -1.0}, "min_p must be a number in [0, 1]"),
        ({"repetition_penalty": 0.0}, "repetition_penalty must be a number > 0"),
        ({"seed": -3}, "seed must be an integer in"),
        ({"prompt": None}, "prompt must be a string"),
        ({"prompt": []}, "prompt must be a string or a non-empty list of strings, got []"),
        ({"prompt": ["a", None]}, "prompt must be a string or a list of strings, got NoneType"),
        ({"prompt": ["a", "b"], "num_samples": 6000}, "prompts x num_samples must be at most"),
        ({"stop": 5}, "stop must be a string or a list of strings, got 5"),
        ({"stop": ["a", 3]}, "stop must be a string or a list of strings, got int 3 in the list"),
        ({"stop": ["a", ""]}, "stop strings must not be empty"),
        ({"stop": "Z"}, "stop string 'Z' can never be generated: 'Z' not in the vocabulary"),
        ({"stop": "\\n"}, "stop string '\\\\n' can never be generated: '\\\\' not in the "),
        ({"num_threads": 0}, "num_threads must be an integer >= 1, got 0"),
    ],
)
@pytest.mark.parametrize("function", [generate, stream_generate])
def test_bad_arguments_raise_before_any_work(model, function, kwargs, message):
    arguments = {"prompt": "to", "max_new_tokens": 5, **kwargs}
    with pytest.raises(ConfigError) as info:
        function(model, **arguments)  # streams validate on the call, not the first next()
    assert str(info.value).startswith(message)


def test_a_model_without_tokenizer_is_refused():
    model = make_model()
    model.tokenizer = None
    with pytest.raises(ConfigError, match="no tokenizer"):
        generate(model, "a", 3)


def test_prompt_ids_outside_the_vocabulary_are_refused(model):
    with pytest.raises(ConfigError, match="prompt ids must be in"):
        generate_ids(model, torch.tensor([[0, 999]]), 3)


@pytest.mark.parametrize("use_cache", [True, False])
def test_non_finite_logits_are_reported_not_sampled(use_cache):
    model = make_model()
    with torch.no_grad():
        model.ln_f.weight[0] = float("nan")
    with pytest.raises(NonFiniteLogitsError, match="non-finite logits"):
        generate(model, "ab", 5, seed=0, use_cache=use_cache)
    with pytest.raises(NonFiniteLogitsError, match="non-finite logits"):
        next(stream_generate(model, "ab", 5, temperature=0.0, use_cache=use_cache))


@pytest.fixture
def settings_per_step(monkeypatch) -> list[tuple[int, bool, bool]]:
    """(torch thread count, oneDNN enabled, inference mode) at each token chosen, as it runs."""
    seen = []
    real = loop.next_token

    def spy(logits, *args, **kwargs):
        seen.append((torch.get_num_threads(), torch.backends.mkldnn.enabled))
        assert torch.is_inference_mode_enabled()
        return real(logits, *args, **kwargs)

    monkeypatch.setattr(loop, "next_token", spy)
    return seen


def test_decoding_runs_single_threaded_without_onednn_then_restores(model, settings_per_step):
    before = torch.get_num_threads()
    assert torch.backends.mkldnn.enabled
    generate(model, "ab", 3, seed=0)
    stream = stream_generate(model, "ab", 3, seed=0)
    next(stream)
    # Between steps, the consumer runs in the mode it was called in.
    assert (torch.get_num_threads(), torch.backends.mkldnn.enabled) == (before, True)
    assert not torch.is_inference_mode_enabled()
    list(stream)
    generate(model, "ab", 3, seed=0, num_threads=None)
    assert settings_per_step == [(1, False)] * 6 + [(before, False)] * 3
    assert (torch.get_num_threads(), torch.backends.mkldnn.enabled) == (before, True)
    with pytest.raises(ConfigError, match="num_threads must be an integer >= 1, got 0"):
        generate(model, "ab", 3, num_threads=0)
    with pytest.raises(ConfigError, match="num_threads must be an integer >= 1, got 'fast'"):
        generate(model, "ab", 3, num_threads="fast")  # only "auto" is a name


def test_a_large_model_decodes_with_torchs_thread_count_unless_told(settings_per_step):
    torch.manual_seed(0)
    large = TinyGPT(TinyGPTConfig(vocab_size=30, block_size=8, n_embd=256, n_layer=2))
    assert 12 * 2 * 256**2 >= SINGLE_THREAD_MAX_WEIGHTS  # weights per token
    before = torch.get_num_threads()
    prompt = torch.zeros(1, 1, dtype=torch.long)
    generate_ids(large, prompt, 2)
    generate_ids(large, prompt, 2, num_threads=1)
    assert [threads for threads, _ in settings_per_step] == [before] * 2 + [1] * 2


def test_generation_restores_training_mode_and_frees_the_cache():
    model = make_model().train()
    generate(model, "ab", 3, seed=0)
    assert model.training
    assert model.kv_cache is None


def test_abandoning_a_stream_frees_the_cache():
    model = make_model()
    stream = stream_generate(model, "ab", 5, seed=0)
    next(stream)
    assert model.kv_cache is not None  # decoding is under way
    stream.close()
    assert model.kv_cache is None


@pytest.fixture
def batch_rows(monkeypatch) -> list[int]:
    """The number of rows of each batch decoded, appended as each starts."""
    rows = []
    real = loop.fill_columns

    def spy(model, seq, *args, **kwargs):
        rows.append(seq.size(0))
        return real(model, seq, *args, **kwargs)

    monkeypatch.setattr(text, "fill_columns", spy)
    return rows


@pytest.mark.parametrize("use_cache", [True, False])
def test_a_list_of_prompts_shares_a_batch_and_each_greedy_text_is_as_alone(
    model, use_cache, batch_rows
):
    # "" starts from a line break (1 token); the last two are longer than the window (8).
    prompts = ["", "a", "to be", "or not to", "be or not"]
    texts = generate_greedy(model, prompts, 3 * BLOCK, use_cache=use_cache)
    assert batch_rows == [3, 2]  # prompts that fit the window together; longer ones by length
    alone = [generate_greedy(model, p, 3 * BLOCK, use_cache=use_cache) for p in prompts]
    assert texts == alone  # past the window too: refills happen at the same columns
    assert [len(t) for t in texts] == [len(p) + 3 * BLOCK for p in prompts]


def test_a_stream_of_a_list_yields_nothing_for_a_prompt_still_being_read(model):
    prompts = ["a", "to be"]  # "to be" reads its last 4 characters while "a" samples
    steps = list(stream_generate(model, prompts, 6, seed=2))
    assert len(steps) == 4 + 6
    assert [step[1] for step in steps[:4]] == [""] * 4
    assert all(len(step[0]) == 1 for step in steps[:6]) and all(s[0] == "" for s in steps[6:])
    joined = [p + "".join(step[i] for step in steps) for i, p in enumerate(prompts)]
    assert joined == generate(model, prompts, 6, seed=2)


def cut_after_first_stop(text: str, prompt: str, stops: list[str]) -> str:
    """The reference: ``text`` ending with the earliest-ending stop string of its continuation."""
    continuation = text[len(prompt) :]
    ends = [continuation.find(s) + len(s) for s in stops if s in continuation]
    return prompt + continuation[: min(ends, default=len(continuation))]


STOPS = ["!", "xx"]


def test_each_sample_ends_with_its_first_stop_string_same_text_up_to_it(model):
    kwargs = dict(temperature=1.0, seed=3, num_samples=6)
    full = generate(model, "to be", 60, **kwargs)
    stopped = generate(model, "to be", 60, stop=STOPS, **kwargs)
    assert stopped == [cut_after_first_stop(text, "to be", STOPS) for text in full]
    assert all(t.endswith(("!", "xx")) for t in stopped)
    assert len({len(t) for t in stopped}) > 3  # they stop at different places
    one, one_stopped = (generate(model, "to be", 60, stop=s, seed=3) for s in (None, "!"))
    assert one_stopped == cut_after_first_stop(one, "to be", ["!"]) != one


@pytest.mark.parametrize("read_every", [1, 3])
def test_stop_strings_cut_the_same_whatever_the_read_interval(model, monkeypatch, read_every):
    expected = generate(model, "to be", 60, stop=STOPS, seed=3, num_samples=6)
    monkeypatch.setattr(text, "STOP_READ_STEPS", read_every)
    assert generate(model, "to be", 60, stop=STOPS, seed=3, num_samples=6) == expected


def test_stop_strings_are_searched_in_the_continuation_only(model):
    full = generate_greedy(model, "to be", 30)
    assert full[5:] == "t" + "r" * 29
    # "be" lies in the prompt, "et" straddles prompt and continuation: neither stops it.
    assert generate_greedy(model, "to be", 30, stop=["be", "et"]) == full


def test_decoding_ends_once_every_sample_has_stopped(model, settings_per_step):
    text = generate_greedy(model, "to be", 200, stop="rr")
    assert text == "to be" + "trr"
    assert len(settings_per_step) == STOP_READ_STEPS  # read after 8 steps: all stopped


def test_a_stream_with_stop_strings_ends_as_the_last_sample_stops(model):
    kwargs = dict(seed=3, stop=STOPS)
    stopped = generate(model, "to be", 60, num_samples=3, **kwargs)
    steps = list(stream_generate(model, "to be", 60, num_samples=3, **kwargs))
    assert ["to be" + "".join(step[i] for step in steps) for i in range(3)] == stopped
    assert len(steps) == max(len(t) for t in stopped) - len("to be")
    pieces = list(stream_generate(model, "to be", 60, **kwargs))  # one sample: strings
    assert all(isinstance(p, str) for p in pieces)
    assert "to be" + "".join(pieces) == generate(model, "to be", 60, **kwargs)


def test_decoding_leaves_no_inference_tensor_among_the_buffers(model):
    # DDP syncs every buffer before each forward; the text-sample callback decodes on rank 0
    # between training steps, so an inference tensor left behind would crash the next step.
    generate(model, "ab", max_new_tokens=40)
    assert not any(buffer.is_inference() for buffer in model.buffers())
