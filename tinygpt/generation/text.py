"""The text API: prompts in, texts out, as the TinyGPT notebook calls it.

:func:`generate`, :func:`stream_generate` and the notebook's named variants take a
model carrying its tokenizer (``model.tokenizer``, as :func:`tinygpt.checkpoint.load_model`
sets it) and a prompt string or a list of them.

Policies:

* Return shape, as in the TinyGPT notebook (``print(generate(model, "To be", 50))``): a prompt
  string with ``num_samples == 1`` gives a ``str``; a prompt string with ``num_samples > 1`` a
  list of samples; a list of prompts a list with one entry per prompt, each a ``str``
  (``num_samples == 1``) or a list of ``num_samples`` samples. Each text is the prompt
  followed by its continuation. :func:`stream_generate` yields, per step, the new characters
  in the same shape.
* Batches: all samples of all prompts that fit the context window are decoded as one batch,
  whatever their lengths (rows are aligned at position 0; a row whose prompt is longer reads
  it one token per step while the shorter rows already sample, see
  :func:`~tinygpt.generation.loop.decode_columns`). Prompts longer than the window are batched
  with prompts of their length only. One generator serves the whole call: the same prompts,
  ``num_samples`` and ``seed`` give the same texts, but a prompt's samples depend on the other
  rows of its batch (sampled text, not greedy, differs from the same prompt decoded alone).
* Stop strings (``stop``, a string or a list): a sample ends at the first point where its
  continuation (never the prompt) contains one; the text keeps it, as Hugging Face's
  ``stop_strings`` does (see :mod:`tinygpt.generation.stop_strings`). The batch keeps its shape
  until every sample has finished, so each text equals the text decoded without ``stop`` cut after
  its first stop string (same seed). Without stop strings nothing is read back until the end;
  with them the new tokens are read every :data:`STOP_READ_STEPS` steps (streams: every step).
* Empty prompt: generation starts from ``"\\n"`` (a line break is a natural start of text in
  the Shakespeare vocabulary) and the returned texts do not include it. A vocabulary without
  ``"\\n"`` refuses an empty prompt with a ConfigError.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import torch

from tinygpt.data.tokenizer import CharTokenizer
from tinygpt.errors import ConfigError
from tinygpt.generation.loop import (
    DECODE_THREADS,
    FiniteGuard,
    checked_threads,
    compile_applies,
    decode_columns,
    decoding_settings,
    one_step_at_a_time,
)
from tinygpt.generation.memory import check_generation_memory
from tinygpt.generation.sampling import (
    MAX_NEW_TOKENS_LIMIT,
    SamplingParams,
    check_int,
    make_generator,
)
from tinygpt.generation.stop_strings import StopStrings, check_stop, check_stop_characters
from tinygpt.generation.strategies import DECODERS
from tinygpt.models import TinyGPT

Prompt = str | Sequence[str]
Generated = str | list[str] | list[list[str]]  # see "Return shape" in the module docstring

EMPTY_PROMPT_START = "\n"
MAX_NUM_SAMPLES = 10_000  # rows of one call: prompts x num_samples
# With stop strings, steps between reads of the new tokens. A read is Python work for every row
# on a CPU (a large share of a step at the notebook's size when done every step) and waits for
# the queued steps on a GPU; at most 7 steps run past the last stop and are discarded.
STOP_READ_STEPS = 8


def _tokenizer(model: TinyGPT) -> CharTokenizer:
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ConfigError(
            "the model has no tokenizer: load it with tinygpt.checkpoint.load_model "
            "or set model.tokenizer"
        )
    return tokenizer


def encode_prompt(tokenizer: CharTokenizer, prompt: str) -> torch.Tensor:
    """Prompt ids ``(t,)``; an empty prompt starts from ``"\\n"`` (see module docstring)."""
    if not isinstance(prompt, str):
        raise ConfigError(f"prompt must be a string, got {type(prompt).__name__}")
    if prompt:
        return tokenizer.encode(prompt)  # names any unknown characters
    if EMPTY_PROMPT_START not in tokenizer.chars:
        raise ConfigError(
            "the prompt is empty and the vocabulary has no line break to start from; "
            "give a non-empty prompt"
        )
    return tokenizer.encode(EMPTY_PROMPT_START)


def _prompt_list(prompt: object) -> list[str]:
    """The prompts of a text call: one string, or a non-empty list (or tuple) of strings."""
    if isinstance(prompt, str):
        return [prompt]
    if not isinstance(prompt, (list, tuple)):
        raise ConfigError(
            f"prompt must be a string or a list of strings, got {type(prompt).__name__}"
        )
    if not prompt:
        raise ConfigError("prompt must be a string or a non-empty list of strings, got []")
    for item in prompt:
        if not isinstance(item, str):
            raise ConfigError(
                f"prompt must be a string or a list of strings, got {type(item).__name__} "
                f"{item!r} in the list"
            )
    return list(prompt)


def _batches(lengths: Sequence[int], block_size: int) -> list[list[int]]:
    """Prompt indices decoded as one batch each, in order of first appearance.

    Prompts that fit the context window share one batch whatever their lengths (see
    :func:`~tinygpt.generation.loop.decode_columns`). A longer prompt is prefilled from its last
    ``block_size`` tokens, which puts its cache refills at other columns than a shorter
    prompt's, so longer prompts share a batch only with prompts of the same length.
    """
    batches: dict[int, list[int]] = {}
    for i, length in enumerate(lengths):
        batches.setdefault(length if length > block_size else 0, []).append(i)
    return list(batches.values())


@dataclass(frozen=True)
class _Request:
    """A validated text call: each prompt's ids, the samples per prompt, where samples stop."""

    tokenizer: CharTokenizer
    prompts: list[str]
    one_prompt: bool  # a string was given, not a list
    ids: list[torch.Tensor]  # per prompt, on the model's device; "\n" for an empty prompt
    num_samples: int
    max_new_tokens: int
    stop: tuple[str, ...]
    generator: torch.Generator | None

    def shape(self, texts: list[list[str]]) -> Generated:
        """``texts[prompt][sample]`` in the shape the call promises (see the module docstring)."""
        per_prompt = [samples[0] if self.num_samples == 1 else samples for samples in texts]
        return per_prompt[0] if self.one_prompt else per_prompt


def _request(
    model: TinyGPT,
    prompt: Prompt,
    max_new_tokens: int,
    num_samples: int,
    seed: int | torch.Generator | None,
    stop: str | Sequence[str] | None,
) -> _Request:
    """Validate a text call (all but the sampling parameters), before any model work; a call
    whose buffers would not fit in memory is refused (:mod:`tinygpt.generation.memory`)."""
    prompts = _prompt_list(prompt)
    check_int("max_new_tokens", max_new_tokens, 0, MAX_NEW_TOKENS_LIMIT)
    check_int("num_samples", num_samples, 1, MAX_NUM_SAMPLES)
    if len(prompts) * num_samples > MAX_NUM_SAMPLES:
        raise ConfigError(
            f"prompts x num_samples must be at most {MAX_NUM_SAMPLES}, "
            f"got {len(prompts)} x {num_samples}"
        )
    stops = check_stop(stop)
    tokenizer = _tokenizer(model)
    check_stop_characters(stops, tokenizer.chars)
    device = model.wte.weight.device
    ids = [encode_prompt(tokenizer, text).to(device) for text in prompts]
    longest = max(len(i) for i in ids)
    rows, columns = len(prompts) * num_samples, longest + max_new_tokens
    check_generation_memory(model, rows, columns, tokenizer.chars)
    generator = make_generator(seed, device)
    one_prompt = isinstance(prompt, str)
    return _Request(
        tokenizer, prompts, one_prompt, ids, num_samples, max_new_tokens, stops, generator
    )


def _batch_buffer(request: _Request, batch: list[int]) -> tuple[torch.Tensor, list[int]]:
    """A batch's ``(rows, longest prompt + max_new_tokens)`` buffer, and each row's prompt length.

    The ``num_samples`` rows from ``i * num_samples`` on start with prompt ``batch[i]``; the
    decoding loop writes the rest.
    """
    n = request.num_samples
    lengths = [request.ids[p].numel() for p in batch]
    seq = torch.zeros(
        len(batch) * n,
        max(lengths) + request.max_new_tokens,
        dtype=torch.long,
        device=request.ids[0].device,
    )
    for i, p in enumerate(batch):
        seq[i * n : (i + 1) * n, : lengths[i]] = request.ids[p]
    return seq, [length for length in lengths for _ in range(n)]


def _row_pieces(
    model: TinyGPT,
    seq: torch.Tensor,
    lengths: list[int],
    request: _Request,
    params: SamplingParams,
    use_cache: bool,
    compile: bool,
    read_every: int | None,
) -> Iterator[list[str]]:
    """Decode ``seq``'s rows; at each read, yield the text each row gained since the last read.

    A row gains text from the end of its prompt (``lengths[row]``) for ``max_new_tokens``
    characters, or up to and including its first stop string; the loop ends once every row
    has finished. A finished row keeps being decoded with the others (so the random draws, and
    so every row's text, are the same with and without stop strings) but gains nothing more.
    Reads happen every ``read_every`` steps (``None``: once, at the end) and check the logits.
    """
    shortest, total = min(lengths), seq.size(1)
    ends = [length + request.max_new_tokens for length in lengths]
    finished = [False] * len(lengths)
    stops = StopStrings(request.stop, len(lengths))
    guard = FiniteGuard(seq.device)
    decode = request.tokenizer.decode
    differ = torch.tensor(lengths, device=seq.device) if max(lengths) > shortest else None
    generator = request.generator
    steps = decode_columns(
        model, seq, shortest, params, generator, use_cache, guard, compile, differ
    )
    every = read_every or total
    read = shortest  # the first column not read yet
    try:
        for n in steps:
            if n + 1 < total and (n + 1 - shortest) % every:
                continue
            guard.check()
            pieces = []
            for row, tokens in enumerate(seq[:, read : n + 1].tolist()):
                if finished[row]:
                    pieces.append("")
                    continue
                start, end = max(read, lengths[row]), min(n + 1, ends[row])
                piece, stopped = stops.cut(row, decode(tokens[start - read : end - read]))
                finished[row] = stopped or end == ends[row]
                pieces.append(piece)
            read = n + 1
            yield pieces
            if all(finished):
                return
    finally:
        steps.close()


def _text_steps(
    model: TinyGPT,
    request: _Request,
    params: SamplingParams,
    use_cache: bool,
    compile: bool,
    read_every: int | None,
) -> Iterator[list[list[str]]]:
    """Decode every prompt's samples, batch by batch (:func:`_batches`), yielding each read.

    Each yield is indexed ``[prompt][sample]`` and holds the text gained since the previous
    one: ``""`` for a sample with nothing new (still reading its prompt, finished, or in
    another batch).
    """
    if request.max_new_tokens == 0:
        return
    lengths = [ids.numel() for ids in request.ids]
    for batch in _batches(lengths, model.config.block_size):
        rows = [(p, s) for p in batch for s in range(request.num_samples)]
        seq, row_lengths = _batch_buffer(request, batch)
        reads = _row_pieces(
            model, seq, row_lengths, request, params, use_cache, compile, read_every
        )
        with closing(reads):
            for pieces in reads:
                texts = [[""] * request.num_samples for _ in request.prompts]
                for (p, s), piece in zip(rows, pieces, strict=True):
                    texts[p][s] = piece
                yield texts


def generate(
    model: TinyGPT,
    prompt: Prompt,
    max_new_tokens: int = 200,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float = 1.0,
    seed: int | torch.Generator | None = None,
    num_samples: int = 1,
    stop: str | Sequence[str] | None = None,
    use_cache: bool = True,
    compile: bool = False,
    num_threads: int | str | None = DECODE_THREADS,
) -> Generated:
    """The prompt followed by up to ``max_new_tokens`` new characters, per prompt and sample.

    ``prompt``: a string, or a list of strings decoded together (see the module docstring for
    the batches and the shape of the result). ``temperature=0`` is greedy. The same ``seed``
    gives the same texts whatever the global RNG state; ``seed=None`` samples from the global
    RNG. ``stop``: a string or a list of strings; a sample ends with the first one that
    appears in its continuation (kept in the text). ``compile`` and ``num_threads`` as in
    :func:`generate_ids`.
    Bad values raise ConfigError (a ValueError) naming the parameter; unknown prompt characters
    raise UnknownCharactersError.
    """
    params = SamplingParams(temperature, top_k, top_p, min_p, repetition_penalty)
    request = _request(model, prompt, max_new_tokens, num_samples, seed, stop)
    compile = compile_applies(model, compile)
    threads = checked_threads(model, num_threads)
    read_every = STOP_READ_STEPS if request.stop else None
    pieces = [[[text] for _ in range(num_samples)] for text in request.prompts]
    with decoding_settings(threads):
        for step in _text_steps(model, request, params, use_cache, compile, read_every):
            for prompt_pieces, new in zip(pieces, step, strict=True):
                for sample_pieces, piece in zip(prompt_pieces, new, strict=True):
                    sample_pieces.append(piece)
    return request.shape([["".join(sample) for sample in samples] for samples in pieces])


def stream_generate(
    model: TinyGPT,
    prompt: Prompt,
    max_new_tokens: int = 200,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float = 1.0,
    seed: int | torch.Generator | None = None,
    num_samples: int = 1,
    stop: str | Sequence[str] | None = None,
    use_cache: bool = True,
    compile: bool = False,
    num_threads: int | str | None = DECODE_THREADS,
) -> Iterator[Generated]:
    """Yield, per step, each sample's new character, shaped as :func:`generate` returns texts.

    A sample with nothing new this step (still reading a longer prompt of its batch, or
    stopped) yields ``""``; the stream ends when every sample has finished. Joining a
    sample's pieces after its prompt gives its text from :func:`generate` with the same
    arguments and seed. Arguments are validated when this is called.
    """
    params = SamplingParams(temperature, top_k, top_p, min_p, repetition_penalty)
    request = _request(model, prompt, max_new_tokens, num_samples, seed, stop)
    compile = compile_applies(model, compile)
    threads = checked_threads(model, num_threads)
    steps = _text_steps(model, request, params, use_cache, compile, read_every=1)
    return (request.shape(step) for step in one_step_at_a_time(steps, threads))


def generate_greedy(
    model: TinyGPT, prompt: Prompt, max_new_tokens: int = 200, **kwargs: Any
) -> Generated:
    """Argmax decoding (``temperature=0``); other keywords as in :func:`generate`."""
    greedy = DECODERS["greedy"].temperature
    return generate(model, prompt, max_new_tokens, temperature=greedy, **kwargs)


def generate_temperature(
    model: TinyGPT,
    prompt: Prompt,
    max_new_tokens: int = 200,
    temperature: float = 1.0,
    **kwargs: Any,
) -> Generated:
    """Sampling from the temperature-scaled distribution."""
    return generate(model, prompt, max_new_tokens, temperature=temperature, **kwargs)


def generate_top_k(
    model: TinyGPT,
    prompt: Prompt,
    max_new_tokens: int = 200,
    top_k: int = DECODERS["top_k"].top_k,
    **kwargs: Any,
) -> Generated:
    """Sampling from the ``top_k`` most probable tokens."""
    return generate(model, prompt, max_new_tokens, top_k=top_k, **kwargs)


def generate_nucleus(
    model: TinyGPT,
    prompt: Prompt,
    max_new_tokens: int = 200,
    top_p: float = DECODERS["nucleus"].top_p,
    **kwargs: Any,
) -> Generated:
    """Nucleus (top-p) sampling."""
    return generate(model, prompt, max_new_tokens, top_p=top_p, **kwargs)


def generateV2(
    model: TinyGPT,
    prompt: Prompt,
    max_new_tokens: int = 200,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    **kwargs: Any,
) -> Generated:
    """The notebook's combined call: temperature, then top-k, then top-p (name kept from it)."""
    return generate(
        model, prompt, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, **kwargs
    )
