"""The token loop: prompt ids in, generated ids out, with or without the KV cache.

:func:`generate_ids` and :func:`stream_ids` take and return token ids; the text API
(:mod:`tinygpt.generation.text`) runs the same loop. Policies:

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
  spends longer setting up each call than torch's own kernel takes to run, so tokens come
  faster without it, at the notebook's size and at nanoGPT's baby size alike (the decoding
  benchmark runs HF generate both ways). Like the thread count, the setting is process-wide
  while decoding runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch

from tinygpt.errors import ConfigError, NonFiniteLogitsError
from tinygpt.generation.fast_step import (
    DecodeStep,
    can_compile,
    compiled_decode_step,
    compiled_sampling_step,
)
from tinygpt.generation.memory import check_generation_memory
from tinygpt.generation.sampling import (
    MAX_NEW_TOKENS_LIMIT,
    Observer,
    SamplingParams,
    check_int,
    next_token,
)
from tinygpt.models import TinyGPT, TinyGPTConfig, evaluating

T = TypeVar("T")

DECODE_THREADS = "auto"  # torch intra-op threads while decoding; see decode_threads
# Where a second intra-op thread starts to pay: at the notebook's size (0.1M weights per token)
# batch-1 decoding is no faster on two threads than on one; at nanoGPT's baby size (10.6M) it is.
SINGLE_THREAD_MAX_WEIGHTS = 1_000_000


def refill_length(block_size: int) -> int:
    """How many recent tokens the KV cache keeps when it is full: half the window, at least 1."""
    return max(1, block_size // 2)


def cache_context_start(n: int, prompt_len: int, block_size: int) -> int:
    """Index of the first token the cached loop conditions on when choosing token ``n``.

    Mirrors the loop in :func:`decode_columns`: it documents (and lets tests check) exactly which
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


class FiniteGuard:
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


def compile_applies(model: TinyGPT, compile: bool) -> bool:
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


def fill_columns(
    model: TinyGPT,
    seq: torch.Tensor,
    prompt_len: int,
    params: SamplingParams,
    generator: torch.Generator | None,
    use_cache: bool,
    guard: FiniteGuard,
    compile: bool = False,
    prompt_lengths: torch.Tensor | None = None,
    observe: Observer | None = None,
) -> Iterator[int]:
    """Fill ``seq[:, prompt_len:]`` column by column, yielding each filled column's index. Run
    it in inference mode: :func:`decode_columns` is this generator in inference mode step by step.

    Nothing here reads a tensor's value on the host, so steps are not synchronised. The model
    runs in eval mode and its KV cache is set up here and cleared at the end (also when a
    stream is abandoned), so one model serves one generation at a time. Cached prefills and
    steps run :class:`~tinygpt.generation.fast_step.DecodeStep`; with ``compile``, the
    one-token step instead runs :func:`~tinygpt.generation.fast_step.compiled_decode_step`.

    Prompts of different lengths share the batch through ``prompt_lengths`` (``(batch,)``, each
    at least ``prompt_len``, the shortest; ``seq`` holds every row's whole prompt): a row whose
    prompt is longer keeps its own prompt token at each column its prompt covers, so the model
    reads that prompt one token per step and the token sampled there is discarded. Positions
    stay aligned, so a row whose prompt fits the window sees the contexts it would see decoded
    alone (the cache fills and refills at the same columns).

    ``observe`` is called at each step with the distribution the step's tokens are drawn from
    (see :func:`~tinygpt.generation.sampling.next_token`).
    """
    block = model.config.block_size
    total = seq.size(1)
    if total == prompt_len:
        return
    penalise = params.repetition_penalty != 1.0
    # A compiled step samples in its graph, unless the choice needs the history (a repetition
    # penalty) or an observer needs the distribution: then it returns logits.
    samples_in_step = compile and not penalise and observe is None
    longest = prompt_len if prompt_lengths is None else int(prompt_lengths.max())
    one_token = None  # built at its first use: a short generation may need no one-token step
    with evaluating(model):
        try:
            if use_cache:
                model.setup_kv_cache(seq.size(0))
                cached = DecodeStep(model)
            start = max(0, prompt_len - block)
            filled = prompt_len - start
            token = None  # set by a compiled step that samples in its graph, else from logits
            if use_cache and samples_in_step and total - prompt_len > 1:
                # The prompt's last token goes through the compiled step too, so the first new
                # token costs one library call, not an eager forward and eager sampling. (One
                # new token alone needs no step built.)
                if filled > 1:
                    cached(seq[:, start : prompt_len - 1], 0)
                one_token = _one_token_step(model, cached, compile, True, params, generator)
                token, logits_sum = one_token(seq[:, prompt_len - 1 : prompt_len], filled - 1)
                guard.total.add_(logits_sum)
            elif use_cache:
                logits = cached(seq[:, start:prompt_len], 0)
            else:
                logits = _last_logits(model, seq[:, start:prompt_len])
            for n in range(prompt_len, total):
                if token is None:
                    guard.add(logits)
                    history = seq[:, :n] if penalise else None
                    token = next_token(logits, params, history, generator, observe)
                if n < longest:  # rows still inside their prompt keep its token
                    token = torch.where(prompt_lengths > n, seq[:, n], token)
                seq[:, n] = token
                yield n
                if n + 1 == total:
                    break
                token = None
                if not use_cache:
                    logits = _last_logits(model, seq[:, max(0, n + 1 - block) : n + 1])
                elif filled < block:
                    if one_token is None:
                        one_token = _one_token_step(
                            model, cached, compile, samples_in_step, params, generator
                        )
                    if samples_in_step:
                        token, logits_sum = one_token(seq[:, n : n + 1], filled)
                        guard.total.add_(logits_sum)
                    else:
                        logits = one_token(seq[:, n : n + 1], filled)
                    filled += 1
                else:  # cache full: refill it with the most recent tokens (see module docstring)
                    filled = refill_length(block)
                    logits = cached(seq[:, n + 1 - filled : n + 1], 0)
        finally:
            if use_cache:
                model.clear_kv_cache()


# Inference mode entered for each step and left at each yield, so that the consumer's code
# between steps (a stream's reader, a training callback) runs in the mode it was called in.
# generate_ids, which runs nothing between steps, enters it once around the whole loop instead:
# a few microseconds a token at the notebook's size.
decode_columns = torch.inference_mode()(fill_columns)


def _one_token_step(
    model: TinyGPT,
    cached: DecodeStep,
    compile: bool,
    samples_in_step: bool,
    params: SamplingParams,
    generator: torch.Generator | None,
) -> Callable:
    """The one-token step: eager, or compiled; compiled, it returns the token if
    ``samples_in_step``, else the logits."""
    if not compile:
        return cached
    if not samples_in_step:
        return compiled_decode_step(model)
    return compiled_sampling_step(model, params, generator)


def _start(model: TinyGPT, idx: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Validate the prompt ids and the request's memory (:mod:`tinygpt.generation.memory`), and
    return the ``(batch, prompt + new)`` buffer holding them."""
    check_int("max_new_tokens", max_new_tokens, 0, MAX_NEW_TOKENS_LIMIT)
    if idx.dim() != 2 or idx.size(1) == 0 or idx.dtype != torch.long:
        raise ConfigError(
            f"prompt ids must be a non-empty (batch, length) int64 tensor, got shape "
            f"{tuple(idx.shape)} and dtype {idx.dtype}"
        )
    vocab = model.config.vocab_size
    if idx.min() < 0 or idx.max() >= vocab:
        raise ConfigError(f"prompt ids must be in [0, {vocab - 1}] (the model's vocabulary)")
    check_generation_memory(model, idx.size(0), idx.size(1) + max_new_tokens)
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
    observe: Observer | None = None,
) -> torch.Tensor:
    """Prompt ids ``(batch, t)`` followed by ``max_new_tokens`` generated ids per row.

    ``params`` defaults to plain sampling at temperature 1; ``generator`` makes it reproducible.
    Raises NonFiniteLogitsError if the model produced NaN/inf logits at any step. Uses the
    model's KV cache (``use_cache=True``), clearing it afterwards, and eval mode, restoring
    the model's mode afterwards. ``compile=True`` runs the cached one-token step built by
    AOTInductor (:mod:`tinygpt.generation.fast_step`; dense models only, a mixture of experts
    decodes uncompiled with a warning): tens of seconds to build once per shape and process, faster
    per token after. It is independent of ``model.config.compile``, which is about training.
    ``num_threads``: torch intra-op threads while decoding (see the module docstring).
    ``observe``: called with each step's ``(batch, vocab)`` distribution that the new tokens are
    drawn from, e.g. to measure its entropy (the tokens are the same as without it).
    """
    params = params or SamplingParams()
    seq = _start(model, idx, max_new_tokens)
    guard = FiniteGuard(seq.device)
    compile = compile_applies(model, compile)
    steps = fill_columns(
        model, seq, idx.size(1), params, generator, use_cache, guard, compile, observe=observe
    )
    with decoding_settings(decode_threads(model, num_threads)), torch.inference_mode():
        for _ in steps:
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
    compile = compile_applies(model, compile)
    guard = FiniteGuard(seq.device)
    steps = decode_columns(model, seq, idx.size(1), params, generator, use_cache, guard, compile)
    threads = checked_threads(model, num_threads)
    return _checked_columns(seq, one_step_at_a_time(steps, threads), guard)


def checked_threads(model: TinyGPT, num_threads: int | str | None) -> int | None:
    """:func:`decode_threads`, validated now rather than when decoding starts."""
    threads = decode_threads(model, num_threads)
    if threads is not None:
        check_int("num_threads", threads, 1)
    return threads


def one_step_at_a_time(steps: Generator[T, None, None], num_threads: int | None) -> Iterator[T]:
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
    seq: torch.Tensor, steps: Iterator[int], guard: FiniteGuard
) -> Iterator[torch.Tensor]:
    for n in steps:
        guard.check()
        yield seq[:, n]
