"""Autoregressive generation: the token loop (with or without the KV cache) and the text API.

Token level: :func:`generate_ids` and :func:`stream_ids` take and return token ids.
Text level: :func:`generate`, :func:`stream_generate` and the notebook's named variants take a
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
  it one token per step while the shorter rows already sample, see :func:`_decode`). Prompts
  longer than the window are batched with prompts of their length only. One generator serves
  the whole call: the same prompts, ``num_samples`` and ``seed`` give the same texts, but a
  prompt's samples depend on the other rows of its batch (sampled text, not greedy, differs
  from the same prompt decoded alone).
* Stop strings (``stop``, a string or a list): a sample ends at the first point where its
  continuation (never the prompt) contains one; the text keeps it, as Hugging Face's
  ``stop_strings`` does (see :mod:`tinygpt.stop_strings`). The batch keeps its shape until
  every sample has finished, so each text equals the text decoded without ``stop`` cut after
  its first stop string (same seed). Without stop strings nothing is read back until the end;
  with them the new tokens are read every :data:`STOP_READ_STEPS` steps (streams: every step).
* Empty prompt: generation starts from ``"\\n"`` (a line break is a natural start of text in
  the Shakespeare vocabulary) and the returned texts do not include it. A vocabulary without
  ``"\\n"`` refuses an empty prompt with a ConfigError.
* KV cache past the context window: the prompt's last ``block_size`` tokens are prefilled,
  then each step feeds one token. When the newest token no longer fits (the cache holds
  ``block_size`` positions), the cache is refilled with the most recent ``keep =``
  :func:`refill_length` tokens (``block_size // 2``), newest included, at positions
  ``0 .. keep - 1``, and one-token steps continue. So the model's context varies between
  ``keep`` and ``block_size`` tokens, and one refill (a prefill of ``keep`` tokens) happens
  every ``block_size - keep + 1`` tokens. Cached decoding equals uncached decoding for every
  token whose context fits in the window (the first ``block_size - prompt_len + 1`` new
  tokens); after that the uncached path (``use_cache=False``, nanoGPT's crop to the last
  ``block_size`` tokens) sees a longer context and may choose differently. Each cached token
  past the window equals the uncached model's choice given the context that
  :func:`cache_context_start` names.
* Threads: ``num_threads="auto"`` (the default) decodes a model with fewer than
  :data:`SINGLE_THREAD_MAX_WEIGHTS` weights per token on one torch intra-op thread (restored
  after): its ops are too small to gain from a second thread, and waking it each op costs
  more. Larger models keep torch's setting, since their matrix-vector products are worth
  splitting. An integer sets the count; ``None`` keeps torch's setting.
* oneDNN is switched off while decoding (restored after): at these sizes its exact GELU
  costs ~7 us of set-up per call against ~2 us for torch's own kernel, and a token takes
  0.84x the time without it at the notebook's size (0.86x at nanoGPT's baby size) on the 2-core
  Xeon. Like the thread count, the setting is process-wide while decoding runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from tinygpt.compiled_step import can_compile, compiled_decode_step
from tinygpt.decode_step import DecodeStep
from tinygpt.decoding import (
    MAX_NEW_TOKENS_LIMIT,
    SamplingParams,
    check_int,
    make_generator,
    next_token,
)
from tinygpt.errors import ConfigError, NonFiniteLogitsError
from tinygpt.model import TinyGPT, TinyGPTConfig
from tinygpt.stop_strings import StopStrings, check_stop, check_stop_characters
from tinygpt.tokenizer import CharTokenizer

T = TypeVar("T")
Prompt = str | Sequence[str]
Generated = str | list[str] | list[list[str]]  # see "Return shape" in the module docstring

EMPTY_PROMPT_START = "\n"
MAX_NUM_SAMPLES = 10_000  # rows of one call: prompts x num_samples
# With stop strings, steps between reads of the new tokens. A read costs a few microseconds of
# Python per row on a CPU (20% of a step at the notebook's size when done every step) and waits
# for the queued steps on a GPU; at most 7 steps run past the last stop and are discarded.
STOP_READ_STEPS = 8
DECODE_THREADS = "auto"  # torch intra-op threads while decoding; see decode_threads
# Batch-1 tokens per second on the 2-core Xeon, one vs two threads: notebook's size (0.1M
# weights per token) 3364 vs 3289; nanoGPT's baby size (10.6M) 278 vs 435.
SINGLE_THREAD_MAX_WEIGHTS = 1_000_000


def refill_length(block_size: int) -> int:
    """How many recent tokens the KV cache keeps when it is full: half the window, at least 1."""
    return max(1, block_size // 2)


def cache_context_start(n: int, prompt_len: int, block_size: int) -> int:
    """Index of the first token the cached loop conditions on when choosing token ``n``.

    Mirrors the loop in :func:`_decode`: it documents (and lets tests check) exactly which
    context each cached token past the window was computed from.
    """
    start = max(0, prompt_len - block_size)
    filled = prompt_len - start  # cache positions in use after the prefill
    keep = refill_length(block_size)
    for m in range(prompt_len, n):  # token m has just been chosen; feed it
        if filled < block_size:
            filled += 1
        else:
            start, filled = m + 1 - keep, keep
    return start


class _FiniteGuard:
    """Sums every logit, so one finiteness check covers all steps without a per-step sync.

    A NaN or infinity anywhere makes the float32 sum non-finite. (So would finite logits
    summing past 3e38, which no working model produces.)
    """

    def __init__(self, device: torch.device) -> None:
        self.total = torch.zeros((), dtype=torch.float32, device=device)

    def add(self, logits: torch.Tensor) -> None:
        self.total.add_(logits.sum(dtype=torch.float32))

    def check(self) -> None:
        if not torch.isfinite(self.total):
            raise NonFiniteLogitsError(
                "the model produced non-finite logits (NaN or inf), so no token can be sampled; "
                "the checkpoint's weights are probably corrupt or diverged"
            )


def weights_per_token(config: TinyGPTConfig) -> int:
    """The block weights one token's forward multiplies by: 12 x n_layer x n_embd^2.

    (Attention 4 C^2, feed-forward 8 C^2 per block; a mixture of experts runs one expert's.)
    From the config, so it costs nothing per call, unlike walking the parameters.
    """
    return 12 * config.n_layer * config.n_embd**2


def decode_threads(model: TinyGPT, num_threads: int | str | None) -> int | None:
    """The intra-op thread count to decode ``model`` with: ``"auto"`` resolved, else as given."""
    if num_threads != "auto":
        return num_threads
    return 1 if weights_per_token(model.config) < SINGLE_THREAD_MAX_WEIGHTS else None


@contextmanager
def intra_op_threads(num_threads: int | None) -> Iterator[None]:
    """Run the body with ``num_threads`` torch intra-op threads, then restore the count.

    ``None`` leaves torch's setting alone. The setting is process-wide while the body runs.
    """
    if num_threads is not None:
        check_int("num_threads", num_threads, 1)
    previous = torch.get_num_threads()
    if num_threads is None or num_threads == previous:
        yield
        return
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def onednn_disabled() -> Iterator[None]:
    """Run the body with oneDNN (``torch.backends.mkldnn``) off, then restore its setting."""
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = previous


@contextmanager
def decoding_settings(num_threads: int | None) -> Iterator[None]:
    """The process-wide settings decoding runs under: the thread count, oneDNN off."""
    with intra_op_threads(num_threads), onednn_disabled():
        yield


def _last_logits(
    model: TinyGPT, idx: torch.Tensor, input_pos: torch.Tensor | None = None
) -> torch.Tensor:
    return model(idx, input_pos=input_pos)[0][:, -1]


def _compile_applies(model: TinyGPT, compile: bool) -> bool:
    """Whether the compiled step can run: ``compile`` validated, False for a mixture of experts."""
    if compile not in (True, False):
        raise ConfigError(f"compile must be true or false, got {compile!r}")
    if compile and not can_compile(model):
        warnings.warn(
            "the compiled decoding step supports dense feed-forwards only; "
            "decoding this mixture-of-experts model without compiling",
            stacklevel=3,
        )
        return False
    return bool(compile)


@torch.inference_mode()
def _decode(
    model: TinyGPT,
    seq: torch.Tensor,
    prompt_len: int,
    params: SamplingParams,
    generator: torch.Generator | None,
    use_cache: bool,
    guard: _FiniteGuard,
    compile: bool = False,
    prompt_lengths: torch.Tensor | None = None,
) -> Iterator[int]:
    """Fill ``seq[:, prompt_len:]`` column by column, yielding each filled column's index.

    Nothing here reads a tensor's value on the host, so steps are not synchronised. The model
    runs in eval mode and its KV cache is set up here and cleared at the end (also when a
    stream is abandoned), so one model serves one generation at a time. Cached prefills and
    steps run :class:`tinygpt.decode_step.DecodeStep`; with ``compile``, the one-token step
    instead runs :func:`tinygpt.compiled_step.compiled_decode_step`.

    Prompts of different lengths share the batch through ``prompt_lengths`` (``(batch,)``, each
    at least ``prompt_len``, the shortest; ``seq`` holds every row's whole prompt): a row whose
    prompt is longer keeps its own prompt token at each column its prompt covers, so the model
    reads that prompt one token per step and the token sampled there is discarded. Positions
    stay aligned, so a row whose prompt fits the window sees the contexts it would see decoded
    alone (the cache fills and refills at the same columns).
    """
    block = model.config.block_size
    total = seq.size(1)
    if total == prompt_len:
        return
    penalise = params.repetition_penalty != 1.0
    longest = prompt_len if prompt_lengths is None else int(prompt_lengths.max())
    was_training = model.training
    if was_training:  # train()/eval() walk every module: skip them when there is nothing to do
        model.eval()
    one_token = None  # built at its first use: a short generation may need no one-token step
    try:
        if use_cache:
            model.setup_kv_cache(seq.size(0))
            cached = DecodeStep(model)
        start = max(0, prompt_len - block)
        filled = prompt_len - start
        if use_cache:
            logits = cached(seq[:, start:prompt_len], 0)
        else:
            logits = _last_logits(model, seq[:, start:prompt_len])
        for n in range(prompt_len, total):
            guard.add(logits)
            history = seq[:, :n] if penalise else None
            token = next_token(logits, params, history, generator)
            if n < longest:  # rows still inside their prompt keep its token
                token = torch.where(prompt_lengths > n, seq[:, n], token)
            seq[:, n] = token
            yield n
            if n + 1 == total:
                break
            if not use_cache:
                logits = _last_logits(model, seq[:, max(0, n + 1 - block) : n + 1])
            elif filled < block:
                if one_token is None:
                    one_token = compiled_decode_step(model) if compile else cached
                logits = one_token(seq[:, n : n + 1], filled)
                filled += 1
            else:  # cache full: refill it with the most recent tokens (see module docstring)
                filled = refill_length(block)
                logits = cached(seq[:, n + 1 - filled : n + 1], 0)
    finally:
        if use_cache:
            model.clear_kv_cache()
        if was_training:
            model.train()


def _start(model: TinyGPT, idx: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Validate the prompt ids and return the ``(batch, prompt + new)`` buffer holding them."""
    check_int("max_new_tokens", max_new_tokens, 0, MAX_NEW_TOKENS_LIMIT)
    if idx.dim() != 2 or idx.size(1) == 0 or idx.dtype != torch.long:
        raise ConfigError(
            f"prompt ids must be a non-empty (batch, length) int64 tensor, got shape "
            f"{tuple(idx.shape)} and dtype {idx.dtype}"
        )
    vocab = model.config.vocab_size
    if idx.min() < 0 or idx.max() >= vocab:
        raise ConfigError(f"prompt ids must be in [0, {vocab - 1}] (the model's vocabulary)")
    device = model.wte.weight.device
    seq = torch.empty(idx.size(0), idx.size(1) + max_new_tokens, dtype=torch.long, device=device)
    seq[:, : idx.size(1)] = idx
    return seq


def generate_ids(
    model: TinyGPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    params: SamplingParams | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    compile: bool = False,
    num_threads: int | str | None = DECODE_THREADS,
) -> torch.Tensor:
    """Prompt ids ``(batch, t)`` followed by ``max_new_tokens`` generated ids per row.

    ``params`` defaults to plain sampling at temperature 1; ``generator`` makes it reproducible.
    Raises NonFiniteLogitsError if the model produced NaN/inf logits at any step. Uses the
    model's KV cache (``use_cache=True``), clearing it afterwards, and eval mode, restoring
    the model's mode afterwards. ``compile=True`` runs the cached one-token step built by
    AOTInductor (:mod:`tinygpt.compiled_step`; dense models only, a mixture of experts decodes
    uncompiled with a warning): tens of seconds to build once per shape and process, faster
    per token after. It is independent of ``model.config.compile``, which is about training.
    ``num_threads``: torch intra-op threads while decoding (see the module docstring).
    """
    params = params or SamplingParams()
    seq = _start(model, idx, max_new_tokens)
    guard = _FiniteGuard(seq.device)
    compile = _compile_applies(model, compile)
    with decoding_settings(decode_threads(model, num_threads)):
        for _ in _decode(model, seq, idx.size(1), params, generator, use_cache, guard, compile):
            pass
    guard.check()
    return seq


def stream_ids(
    model: TinyGPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    params: SamplingParams | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    compile: bool = False,
    num_threads: int | str | None = DECODE_THREADS,
) -> Iterator[torch.Tensor]:
    """Like :func:`generate_ids`, but yields each step's new ids ``(batch,)`` as they come.

    Checks the logits before every yield (streaming synchronises each step anyway), so no
    token sampled from non-finite logits is ever yielded.
    """
    params = params or SamplingParams()
    seq = _start(model, idx, max_new_tokens)  # validates now, not at the first next()
    compile = _compile_applies(model, compile)
    guard = _FiniteGuard(seq.device)
    steps = _decode(model, seq, idx.size(1), params, generator, use_cache, guard, compile)
    threads = _checked_threads(model, num_threads)
    return _checked_columns(seq, _one_step_at_a_time(steps, threads), guard)


def _one_step_at_a_time(steps: Generator[T, None, None], num_threads: int | None) -> Iterator[T]:
    """``steps``, each taken under :func:`decoding_settings`, never while the consumer runs."""
    try:
        while True:
            with decoding_settings(num_threads):
                step = next(steps, None)
            if step is None:
                return
            yield step
    finally:
        steps.close()  # an abandoned stream clears the model's KV cache now


def _checked_columns(
    seq: torch.Tensor, steps: Iterator[int], guard: _FiniteGuard
) -> Iterator[torch.Tensor]:
    for n in steps:
        guard.check()
        yield seq[:, n]


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
    :func:`_decode`). A longer prompt is prefilled from its last ``block_size`` tokens, which
    puts its cache refills at other columns than a shorter prompt's, so longer prompts share a
    batch only with prompts of the same length.
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
    """Validate a text call (all but the sampling parameters), before any model work."""
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
    generator = make_generator(seed, device)
    one_prompt = isinstance(prompt, str)
    return _Request(
        tokenizer, prompts, one_prompt, ids, num_samples, max_new_tokens, stops, generator
    )


def _checked_threads(model: TinyGPT, num_threads: int | str | None) -> int | None:
    """:func:`decode_threads`, validated now rather than when decoding starts."""
    threads = decode_threads(model, num_threads)
    if threads is not None:
        check_int("num_threads", threads, 1)
    return threads


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
    guard = _FiniteGuard(seq.device)
    decode = request.tokenizer.decode
    differ = torch.tensor(lengths, device=seq.device) if max(lengths) > shortest else None
    generator = request.generator
    steps = _decode(model, seq, shortest, params, generator, use_cache, guard, compile, differ)
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
    compile = _compile_applies(model, compile)
    threads = _checked_threads(model, num_threads)
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
    compile = _compile_applies(model, compile)
    threads = _checked_threads(model, num_threads)
    steps = _text_steps(model, request, params, use_cache, compile, read_every=1)
    return (request.shape(step) for step in _one_step_at_a_time(steps, threads))


def generate_greedy(
    model: TinyGPT, prompt: Prompt, max_new_tokens: int = 200, **kwargs: Any
) -> Generated:
    """Argmax decoding (``temperature=0``); other keywords as in :func:`generate`."""
    return generate(model, prompt, max_new_tokens, temperature=0.0, **kwargs)


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
    model: TinyGPT, prompt: Prompt, max_new_tokens: int = 200, top_k: int = 10, **kwargs: Any
) -> Generated:
    """Sampling from the ``top_k`` most probable tokens."""
    return generate(model, prompt, max_new_tokens, top_k=top_k, **kwargs)


def generate_nucleus(
    model: TinyGPT, prompt: Prompt, max_new_tokens: int = 200, top_p: float = 0.9, **kwargs: Any
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
