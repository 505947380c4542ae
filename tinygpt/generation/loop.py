"""The token loop: prompt ids in, generated ids out, with or without the KV cache.

:func:`generate_ids` runs the whole loop under :func:`decoding_settings` at once; the text
API (:mod:`tinygpt.generation.text`) runs the same loop, a stream one step at a time.
Past the context window the KV cache is refilled with the most recent
:func:`refill_length` tokens; docs/generation.md ("The KV cache") states the policy and what
it changes.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from tinygpt.errors import ConfigError, NonFiniteLogitsError
from tinygpt.generation.compiled import can_compile, compiled_step
from tinygpt.generation.memory import check_generation_memory
from tinygpt.generation.sampling import (
    MAX_NEW_TOKENS_LIMIT,
    Decoder,
    Observer,
    check_int,
    next_token,
)
from tinygpt.models import TinyGPT, evaluating

DECODE_THREADS = "auto"  # torch intra-op threads while decoding; see decode_threads
# Where a second intra-op thread starts to pay: at the notebook's size (0.1M weights per token)
# batch-1 decoding is no faster on two threads than on one; at nanoGPT's baby size (10.6M) it is.
SINGLE_THREAD_MAX_WEIGHTS = 1_000_000


def refill_length(block_size: int) -> int:
    """How many recent tokens the KV cache keeps when it is full: half the window, at least 1."""
    return max(1, block_size // 2)


def check_finite(logits_sum: torch.Tensor) -> None:
    """Raise unless ``logits_sum``, the float32 sum of every logit so far, is finite: a NaN or
    infinity anywhere makes it non-finite, so one check covers all steps without a per-step
    sync. (So would finite logits summing past 3e38, which no working model produces.)"""
    if not torch.isfinite(logits_sum):
        raise NonFiniteLogitsError(
            "the model produced non-finite logits (NaN or inf), so no token can be sampled; "
            "the checkpoint's weights are probably corrupt or diverged"
        )


def decode_threads(model: TinyGPT, num_threads: int | str | None) -> int | None:
    """The intra-op thread count to decode ``model`` with, validated.

    ``"auto"``: one thread for a model whose token multiplies by fewer than
    :data:`SINGLE_THREAD_MAX_WEIGHTS` block weights (12 n_layer n_embd^2: attention 4 C^2,
    feed-forward 8 C^2): its ops are too small to gain from a second thread, and waking it each
    op costs more. Larger models keep torch's setting (``None``); an integer sets the count.
    """
    if num_threads == "auto":
        weights = 12 * model.config.n_layer * model.config.n_embd**2
        return 1 if weights < SINGLE_THREAD_MAX_WEIGHTS else None
    return None if num_threads is None else check_int("num_threads", num_threads, 1)


@contextmanager
def intra_op_threads(num_threads: int | None) -> Iterator[None]:
    """Run the body with ``num_threads`` torch intra-op threads (process-wide), then restore
    the count. ``None`` leaves torch's setting alone."""
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads or previous)  # under a microsecond when unchanged
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def decoding_settings(num_threads: int | None) -> Iterator[None]:
    """What decoding runs under, process-wide while it runs: inference mode, ``num_threads``
    intra-op threads, and oneDNN off, as at these sizes its exact GELU spends longer setting
    up each call than torch's own kernel takes to run."""
    # None leaves the other oneDNN flags alone: flags() would set them, and setting allow_tf32
    # warns on CPU builds.
    onednn_off = torch.backends.mkldnn.flags(
        enabled=False, deterministic=None, allow_tf32=None, fp32_precision=None
    )
    with torch.inference_mode(), intra_op_threads(num_threads), onednn_off:
        yield


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
    decoder: Decoder,
    generator: torch.Generator | None,
    use_cache: bool,
    compile: bool,
    logits_sum: torch.Tensor,
    prompt_lengths: torch.Tensor | None = None,
    observe: Observer | None = None,
) -> Iterator[int]:
    """Fill ``seq[:, prompt_len:]`` column by column, yielding each filled column's index.

    Run its steps under :func:`decoding_settings`. Nothing here reads a tensor's value on the
    host, so steps are not synchronised. The model runs in eval mode and its KV cache is set
    up here and cleared at the end (also when a stream is abandoned), so one model serves one
    generation at a time. All of the prompt but its last token is prefilled; then each token
    goes through a one-token step, compiled with ``compile`` (a single new token builds none).

    Prompts of different lengths share the batch through ``prompt_lengths`` (``(batch,)``, each
    at least ``prompt_len``, the shortest; ``seq`` holds every row's whole prompt): a row whose
    prompt is longer keeps its own prompt token at each column its prompt covers, so the model
    reads that prompt one token per step and the token sampled there is discarded. Positions
    stay aligned, so a row whose prompt fits the window sees the contexts it would see decoded
    alone (the cache fills and refills at the same columns).

    ``observe`` is called at each step with the distribution the step's tokens are drawn from
    (see :func:`~tinygpt.generation.sampling.next_token`).
    """
    block, total = model.config.block_size, seq.size(1)
    penalise = decoder.repetition_penalty != 1.0
    # The compiled step chooses the token in its graph unless the choice needs the history (a
    # repetition penalty) or an observer needs the distribution: then the loop chooses it.
    in_graph = not penalise and observe is None
    longest = prompt_len if prompt_lengths is None else int(prompt_lengths.max())
    with evaluating(model):
        try:
            if use_cache:
                model.setup_kv_cache(seq.size(0))
                tensors, positions = model.tensors(), torch.arange(block, device=seq.device)

                def cached(start: int, end: int, slot: int) -> torch.Tensor:
                    """Last logits after ``seq[:, start:end]`` fed at cache slot ``slot``."""
                    input_pos = positions[slot : slot + end - start]
                    return model.forward_with(tensors, seq[:, start:end], input_pos)[0][:, -1]

                step = None
                if compile and total - prompt_len > 1:
                    step = compiled_step(model, decoder if in_graph else None, generator)
                start = max(0, prompt_len - block)
                filled = prompt_len - 1 - start  # cache slots in use
                if filled:
                    cached(start, prompt_len - 1, 0)
            for n in range(prompt_len, total):  # choose the token of column n
                token = None
                if not use_cache:
                    logits = model(seq[:, max(0, n - block) : n])[0][:, -1]
                elif filled == block:  # cache full: refill it with the most recent tokens
                    filled = refill_length(block)
                    logits = cached(n - filled, n, 0)
                elif step is None:
                    logits, filled = cached(n - 1, n, filled), filled + 1
                else:
                    token, logits, step_sum = step(seq[:, n - 1 : n], filled)
                    filled += 1
                    if in_graph:
                        logits_sum.add_(step_sum)
                    else:
                        token = None
                if token is None:
                    logits_sum.add_(logits.sum(dtype=torch.float32))
                    history = seq[:, :n] if penalise else None
                    token = next_token(logits, decoder, history, generator, observe)
                if n < longest:  # rows still inside their prompt keep its token
                    token = torch.where(prompt_lengths > n, seq[:, n], token)
                seq[:, n] = token
                yield n
        finally:
            if use_cache:
                model.clear_kv_cache()


def generate_ids(
    model: TinyGPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    decoder: Decoder | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    compile: bool = False,
    num_threads: int | str | None = DECODE_THREADS,
    observe: Observer | None = None,
) -> torch.Tensor:
    """Prompt ids ``(batch, t)`` followed by ``max_new_tokens`` generated ids per row.

    ``decoder`` defaults to plain sampling at temperature 1; ``generator`` makes it
    reproducible. Raises NonFiniteLogitsError if the model produced NaN/inf logits at any step.
    Uses the model's KV cache (``use_cache=True``), clearing it afterwards, and eval mode,
    restoring the model's mode afterwards. ``compile=True`` runs the one-token step built by
    AOTInductor (:mod:`tinygpt.generation.compiled`; dense models only, a mixture of experts
    decodes uncompiled with a warning): tens of seconds to build once per shape, faster per
    token after; it is independent of ``model.config.compile``, which is about training.
    ``num_threads``: see :func:`decode_threads`. ``observe``: called with each step's
    ``(batch, vocab)`` distribution that the new tokens are drawn from, e.g. to measure its
    entropy (the tokens are the same as without it). A request too big for memory is refused
    before anything is allocated (:mod:`tinygpt.generation.memory`).
    """
    decoder = decoder or Decoder()
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
    threads, compile = decode_threads(model, num_threads), compile_applies(model, compile)
    device = model.wte.weight.device
    seq = torch.empty(idx.size(0), idx.size(1) + max_new_tokens, dtype=torch.long, device=device)
    seq[:, : idx.size(1)] = idx
    total = torch.zeros((), device=seq.device)  # every logit's sum: check_finite
    prompt = idx.size(1)
    with decoding_settings(threads):
        for _ in fill_columns(
            model, seq, prompt, decoder, generator, use_cache, compile, total, None, observe
        ):
            pass
    check_finite(total)
    return seq
