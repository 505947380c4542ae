"""The text API: prompts in, texts out, as the TinyGPT notebook calls it
(``print(generate(model, "To be", 50))``).

:func:`generate`, :func:`stream_generate` and the notebook's named variants take a model
carrying its tokenizer (``model.tokenizer``, as :func:`tinygpt.checkpoint.load_model` sets it)
and a prompt string or a list of them. docs/generation.md ("From Python") gives the shapes they
return, how prompts share batches, and what stop strings do. An empty prompt starts from
``"\\n"`` (a natural start of text in the Shakespeare vocabulary), not part of the texts.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import closing
from typing import Any

import torch

from tinygpt.errors import ConfigError
from tinygpt.generation.loop import (
    DECODE_THREADS,
    check_finite,
    compile_applies,
    decode_threads,
    decoding_settings,
    fill_columns,
)
from tinygpt.generation.memory import check_generation_memory
from tinygpt.generation.sampling import (
    DECODERS,
    MAX_NEW_TOKENS_LIMIT,
    Decoder,
    check_int,
    make_generator,
)
from tinygpt.models import TinyGPT

Prompt = str | Sequence[str]
Generated = str | list[str] | list[list[str]]  # see "Return shapes" in docs/generation.md

EMPTY_PROMPT_START = "\n"
MAX_NUM_SAMPLES = 10_000  # rows of one call: prompts x num_samples
# With stop strings, steps between reads of the new tokens. A read is Python work for every row
# on a CPU (a large share of a step at the notebook's size when done every step) and waits for
# the queued steps on a GPU; at most 7 steps run past the last stop and are discarded.
STOP_READ_STEPS = 8


def check_strings(name: str, value: object) -> list[str]:
    """``value``, a string or a list (or tuple) of strings, as a list; else a ConfigError."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"{name} must be a string or a list of strings, got {value!r}")
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(
                f"{name} must be a string or a list of strings, got {type(item).__name__} "
                f"{item!r} in the list"
            )
    return list(items)


def check_stop(stop: object) -> tuple[str, ...]:
    """``stop`` (``None``, a string or a list of strings) as a tuple of non-empty strings."""
    stops = tuple(check_strings("stop", [] if stop is None else stop))
    if "" in stops:
        raise ConfigError("stop strings must not be empty (every text contains '')")
    return stops


def check_stop_characters(stops: Sequence[str], vocabulary: str) -> None:
    """Refuse a stop string the model can never write: it has characters outside the vocabulary.

    Such a string would silently never stop anything; the usual cause is a ``\\n`` typed on a
    command line, which Hydra passes on as a backslash and an ``n``.
    """
    for stop in stops:
        if missing := sorted(set(stop) - set(vocabulary)):
            hint = ""
            if "\\" in stop:
                hint = " (Hydra keeps \\n as two characters: docs/generation.md#quoting-prompt)"
            raise ConfigError(
                f"stop string {stop!r} can never be generated: {', '.join(map(repr, missing))} "
                f"not in the vocabulary{hint}"
            )


class StopStrings:
    """Cuts each row's continuation, fed in pieces, after its first stop string.

    A sample ends at the first point where its continuation (never the prompt) contains a stop
    string; the text keeps it, as Hugging Face's ``stop_strings`` does (a stream has shown it
    already). Only the last ``len(longest stop) - 1`` characters of what a row was fed are kept
    between pieces: enough to find a stop string that straddles two pieces.
    """

    def __init__(self, stops: Sequence[str], rows: int) -> None:
        self.stops = tuple(stops)
        self.overlap = max((len(s) for s in self.stops), default=1) - 1
        self.tails = [""] * rows

    def cut(self, row: int, piece: str) -> tuple[str, bool]:
        """``piece`` up to and including the first stop string it completes, and whether one did.

        The earliest end wins when several stop strings occur. The row's earlier pieces held no
        stop string (the caller stops feeding a row once one is found), so every match ends
        inside ``piece``.
        """
        if not self.stops or not piece:
            return piece, False
        tail = self.tails[row]
        window = tail + piece
        ends = [i + len(s) for s in self.stops if (i := window.find(s)) >= 0]
        if ends:
            return piece[: min(ends) - len(tail)], True
        self.tails[row] = window[-self.overlap :] if self.overlap else ""
        return piece, False


def encode_prompt(tokenizer: Any, prompt: str) -> torch.Tensor:
    """Prompt ids ``(t,)``; an empty prompt starts from ``"\\n"`` (see the module docstring)."""
    if not prompt and EMPTY_PROMPT_START not in tokenizer.chars:
        raise ConfigError(
            "the prompt is empty and the vocabulary has no line break to start from; "
            "give a non-empty prompt"
        )
    return tokenizer.encode(prompt or EMPTY_PROMPT_START)  # names any unknown characters


def _batches(lengths: Sequence[int], block_size: int) -> list[list[int]]:
    """Prompt indices decoded as one batch each, in order of first appearance.

    Prompts that fit the context window share one batch whatever their lengths (see
    :func:`~tinygpt.generation.loop.fill_columns`). A longer prompt is prefilled from its last
    ``block_size`` tokens, which puts its cache refills at other columns than a shorter
    prompt's, so longer prompts share a batch only with prompts of the same length.
    """
    batches: dict[int, list[int]] = {}
    for i, length in enumerate(lengths):
        batches.setdefault(length if length > block_size else 0, []).append(i)
    return list(batches.values())


class _Request:
    """A text call with :func:`generate`'s arguments, validated on construction before any
    model work (a call whose buffers would not fit in memory is refused:
    :mod:`tinygpt.generation.memory`)."""

    def __init__(
        self,
        model: TinyGPT,
        prompt: Prompt,
        max_new_tokens: int,
        seed: int | torch.Generator | None,
        num_samples: int,
        stop: str | Sequence[str] | None,
        use_cache: bool,
        compile: bool,
        num_threads: int | str | None,
        **decoder: Any,
    ) -> None:
        self.decoder = Decoder(**decoder)
        self.prompts = check_strings("prompt", prompt)
        if not self.prompts:
            raise ConfigError("prompt must be a string or a non-empty list of strings, got []")
        check_int("max_new_tokens", max_new_tokens, 0, MAX_NEW_TOKENS_LIMIT)
        check_int("num_samples", num_samples, 1, MAX_NUM_SAMPLES)
        self.rows = len(self.prompts) * num_samples
        if self.rows > MAX_NUM_SAMPLES:
            raise ConfigError(
                f"prompts x num_samples must be at most {MAX_NUM_SAMPLES}, "
                f"got {len(self.prompts)} x {num_samples}"
            )
        self.stop = check_stop(stop)
        self.tokenizer = getattr(model, "tokenizer", None)
        if self.tokenizer is None:
            raise ConfigError(
                "the model has no tokenizer: load it with tinygpt.checkpoint.load_model "
                "or set model.tokenizer"
            )
        check_stop_characters(self.stop, self.tokenizer.chars)
        device = model.wte.weight.device
        self.ids = [encode_prompt(self.tokenizer, text).to(device) for text in self.prompts]
        columns = max(map(len, self.ids)) + max_new_tokens
        check_generation_memory(model, self.rows, columns, self.tokenizer.chars)
        self.generator = make_generator(seed, device)
        self.threads = decode_threads(model, num_threads)
        self.compile = compile_applies(model, compile)
        self.model, self.use_cache = model, use_cache
        self.max_new_tokens, self.num_samples = max_new_tokens, num_samples
        self.one_prompt = isinstance(prompt, str)

    def shape(self, texts: list[str]) -> Generated:
        """``texts``, one per sample, prompt by prompt, in the shape the call promises: a prompt
        string gives a ``str``, or a list of samples; a list of prompts a list of those."""
        n = self.num_samples
        per_prompt = [texts[i] if n == 1 else texts[i : i + n] for i in range(0, self.rows, n)]
        return per_prompt[0] if self.one_prompt else per_prompt

    def stream(self) -> Iterator[Generated]:
        """Each step's new characters, shaped; the steps run under :func:`decoding_settings`,
        never while the consumer runs (a stream's reader runs in the mode it was called in)."""
        steps = self.steps(1)
        with closing(steps):  # an abandoned stream clears the model's KV cache now
            while True:
                with decoding_settings(self.threads):
                    step = next(steps, None)
                if step is None:
                    return
                yield self.shape(step)

    def steps(self, read_every: int | None) -> Iterator[list[str]]:
        """Decode every prompt's samples, batch by batch (:func:`_batches`); at each read, every
        ``read_every`` steps (``None``: once, at the end), yield what each sample gained since
        the last read, one entry per sample as :meth:`shape` takes them: ``""`` for a sample
        with nothing new (still reading its prompt, finished, or in another batch). Reads check
        the logits.

        A sample gains text from the end of its prompt for ``max_new_tokens`` characters, or up
        to and including its first stop string; a batch ends once each of its samples has. A
        finished sample keeps being decoded with the others (so the random draws, and so every
        text, are the same with and without stop strings) but gains nothing more.
        """
        if self.max_new_tokens == 0:
            return
        n, decode = self.num_samples, self.tokenizer.decode
        for batch in _batches([len(ids) for ids in self.ids], self.model.config.block_size):
            samples = [p * n + s for p in batch for s in range(n)]  # this batch's rows
            lengths = [len(self.ids[p]) for p in batch for _ in range(n)]
            shortest, total = min(lengths), max(lengths) + self.max_new_tokens
            seq = torch.zeros(len(samples), total, dtype=torch.long, device=self.ids[0].device)
            for i, p in enumerate(batch):
                seq[i * n : (i + 1) * n, : len(self.ids[p])] = self.ids[p]
            ends = [length + self.max_new_tokens for length in lengths]
            finished = [False] * len(samples)
            stops = StopStrings(self.stop, len(samples))
            logits_sum = torch.zeros((), device=seq.device)
            differ = torch.tensor(lengths, device=seq.device) if max(lengths) > shortest else None
            columns = fill_columns(
                self.model, seq, shortest, self.decoder, self.generator, self.use_cache,
                self.compile, logits_sum, differ,
            )  # fmt: skip
            read = shortest  # the first column not read yet
            with closing(columns):
                for col in columns:
                    if col + 1 < total and (col + 1 - shortest) % (read_every or total):
                        continue
                    check_finite(logits_sum)
                    texts = [""] * self.rows
                    for row, tokens in enumerate(seq[:, read : col + 1].tolist()):
                        if finished[row]:
                            continue
                        start, end = max(read, lengths[row]), min(col + 1, ends[row])
                        piece, stopped = stops.cut(row, decode(tokens[start - read : end - read]))
                        finished[row] = stopped or end == ends[row]
                        texts[samples[row]] = piece
                    read = col + 1
                    yield texts
                    if all(finished):
                        break


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

    ``prompt``: a string, or a list of strings decoded together (docs/generation.md: the
    batches and the shape of the result). ``temperature=0`` is greedy. The same ``seed``
    gives the same texts whatever the global RNG state; ``seed=None`` samples from the global
    RNG. ``stop``: a string or a list of strings; a sample ends with the first one that
    appears in its continuation (kept in the text). ``compile`` and ``num_threads`` as in
    :func:`~tinygpt.generation.loop.generate_ids`.
    Bad values raise ConfigError (a ValueError) naming the parameter; unknown prompt characters
    raise UnknownCharactersError.
    """
    request = _Request(**locals())  # every argument, as given
    texts = [[prompt] for prompt in request.prompts for _ in range(num_samples)]
    with decoding_settings(request.threads):
        for step in request.steps(STOP_READ_STEPS if request.stop else None):
            for text, piece in zip(texts, step, strict=True):
                text.append(piece)
    return request.shape(["".join(text) for text in texts])


def stream_generate(
    model: TinyGPT, prompt: Prompt, max_new_tokens: int = 200, *args: Any, **kwargs: Any
) -> Iterator[Generated]:
    """Yield, per step, each sample's new character, shaped as :func:`generate` returns texts;
    the other arguments, positional or keyword, as in :func:`generate`.

    A sample with nothing new this step (still reading a longer prompt of its batch, or
    stopped) yields ``""``; the stream ends when every sample has finished. Joining a
    sample's pieces after its prompt gives its text from :func:`generate` with the same
    arguments and seed. Arguments are validated when this is called.
    """
    arguments = inspect.signature(generate).bind(model, prompt, max_new_tokens, *args, **kwargs)
    arguments.apply_defaults()  # generate's defaults, one source for both
    return _Request(**arguments.arguments).stream()


# help() and a notebook's completion show generate's parameters for the stream too.
stream_generate.__signature__ = inspect.signature(generate).replace(  # type: ignore[attr-defined]
    return_annotation=Iterator[Generated]
)


def generate_greedy(
    model: TinyGPT, prompt: Prompt, max_new_tokens: int = 200, **kwargs: Any
) -> Generated:
    """Argmax decoding (``temperature=0``); other keywords as in :func:`generate`."""
    greedy = DECODERS["greedy"].temperature
    return generate(model, prompt, max_new_tokens, temperature=greedy, **kwargs)


# The notebook's names for generate itself, whose leading parameters are theirs: sampling at a
# temperature, and its combined call (temperature, then top-k, then top-p).
generate_temperature = generateV2 = generate


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
