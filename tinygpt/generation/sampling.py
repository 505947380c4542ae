"""Choosing the next token: logits processors, their validation, and sampling. Torch only.

Every processor is a pure function of a ``(batch, vocab)`` logits tensor that returns a new
tensor with removed tokens set to ``-inf``. Semantics follow Hugging Face transformers'
``RepetitionPenaltyLogitsProcessor``, ``TemperatureLogitsWarper``, ``TopKLogitsWarper``,
``TopPLogitsWarper`` and ``MinPLogitsWarper`` (with ``min_tokens_to_keep=1``), and
:func:`filter_logits` applies the warpers in Hugging Face's order: temperature, top-k, top-p,
min-p. Where this module chooses differently from Hugging Face, the function's docstring says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tinygpt.errors import ConfigError

MAX_NEW_TOKENS_LIMIT = 1_000_000
NEG_INF = float("-inf")


def _is_number(value: object) -> bool:
    # bool is an int subclass, but ``top_p=True`` is a mistake, not 1.0.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``, or a ConfigError naming ``name`` and the range."""
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")
    if value < low:
        raise ConfigError(f"{name} must be {allowed}, got {value}")
    if high is not None and value > high:
        raise ConfigError(f"{name} must be {allowed}, got {value} (too large)")
    return value


def check_float(
    name: str,
    value: object,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a float in the given interval, or a ConfigError naming ``name`` and it."""
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    interval = f"{left}{low:g}, {high:g}{right}" if high != math.inf else None
    allowed = (
        f"a number in {interval}" if interval else f"a number {'>' if low_open else '>='} {low:g}"
    )
    if not _is_number(value):
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    # NaN fails every comparison and inf is never a usable setting, so both are tested here.
    if not math.isfinite(value) or too_low or too_high:
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")
    return value


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen; validated on construction, before any work is done.

    ``temperature=0`` means greedy decoding (argmax). ``None`` disables top-k, top-p or min-p;
    ``repetition_penalty=1`` disables the penalty.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        # frozen: write the normalised values through object.__setattr__.
        set_ = object.__setattr__
        set_(self, "temperature", check_float("temperature", self.temperature, 0.0))
        if self.top_k is not None:
            set_(self, "top_k", check_int("top_k", self.top_k, 1))
        if self.top_p is not None:
            set_(self, "top_p", check_float("top_p", self.top_p, 0.0, 1.0, low_open=True))
        if self.min_p is not None:
            set_(self, "min_p", check_float("min_p", self.min_p, 0.0, 1.0))
        penalty = check_float("repetition_penalty", self.repetition_penalty, 0.0, low_open=True)
        set_(self, "repetition_penalty", penalty)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide by ``temperature``; ``0`` keeps only the argmax (the first one on ties).

    Hugging Face refuses ``temperature=0`` and asks for greedy decoding instead; here it *is*
    greedy, expressed as a filter so that sampling from the result returns the argmax.
    """
    return _temperature(logits, check_float("temperature", temperature, 0.0))


def _temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if temperature == 0.0:
        keep = torch.zeros_like(logits, dtype=torch.bool)
        keep.scatter_(-1, logits.argmax(dim=-1, keepdim=True), True)
        return logits.masked_fill(~keep, NEG_INF)
    if temperature == 1.0:
        return logits
    return logits / temperature


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the ``top_k`` largest logits per row; ``top_k`` >= vocabulary keeps them all.

    As in Hugging Face, every token tied with the k-th largest value is kept, so a row with
    ties at the boundary keeps more than ``top_k`` tokens.
    """
    return _top_k(logits, check_int("top_k", top_k, 1))


def _top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    if top_k >= logits.size(-1):
        return logits
    kth_largest = torch.topk(logits, top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, NEG_INF)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of most probable tokens whose mass reaches p.

    Hugging Face's rule: sort ascending, drop tokens whose cumulative probability is
    ``<= 1 - top_p``, always keep the most probable token; ``top_p=1`` keeps every token.
    Choice on ties: a token with the same logit as the least probable kept token is kept too,
    so the result does not depend on token ids (Hugging Face's unstable sort drops an
    arbitrary subset of such ties).
    """
    return _top_p(logits, check_float("top_p", top_p, 0.0, 1.0, low_open=True))


def _top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    if top_p == 1.0:
        return logits
    sorted_logits = torch.sort(logits, dim=-1).values
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    removed = cumulative <= 1.0 - top_p
    removed[..., -1] = False  # the most probable token always stays
    smallest_kept = sorted_logits.masked_fill(removed, math.inf).amin(dim=-1, keepdim=True)
    return logits.masked_fill(logits < smallest_kept, NEG_INF)


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens whose probability is below ``min_p`` times the top token's probability.

    ``min_p=0`` keeps every token; ``min_p=1`` keeps the most probable token and its ties.
    """
    return _min_p(logits, check_float("min_p", min_p, 0.0, 1.0))


def _min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    if min_p == 0.0:
        return logits
    probs = logits.softmax(dim=-1)
    threshold = min_p * probs.amax(dim=-1, keepdim=True)
    return logits.masked_fill(probs < threshold, NEG_INF)


def repetition_penalty(
    logits: torch.Tensor, token_ids: torch.Tensor, penalty: float
) -> torch.Tensor:
    """Penalise every token that occurs in ``token_ids`` (``(batch, seq)``), once per token.

    As in Hugging Face (CTRL's rule): a positive logit is divided by ``penalty``, a negative
    one multiplied by it, so ``penalty > 1`` discourages repeats and ``< 1`` encourages them.
    Apply it to the raw logits, before temperature and the filters.
    """
    penalty = check_float("repetition_penalty", penalty, 0.0, low_open=True)
    return _repetition_penalty(logits, token_ids, penalty)


def _repetition_penalty(
    logits: torch.Tensor, token_ids: torch.Tensor, penalty: float
) -> torch.Tensor:
    if penalty == 1.0 or token_ids.size(-1) == 0:
        return logits
    seen = logits.gather(-1, token_ids)
    penalised = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(-1, token_ids, penalised)


def filter_logits(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
) -> torch.Tensor:
    """Temperature, then top-k, top-p and min-p, as Hugging Face orders its warpers.

    All parameters are validated before any work (ConfigError, a ValueError, naming the bad one).
    """
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    return warp(logits, params)


def warp(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """:func:`filter_logits` with already validated parameters, for the decoding loop."""
    logits = _temperature(logits, params.temperature)
    if params.top_k is not None:
        logits = _top_k(logits, params.top_k)
    if params.top_p is not None:
        logits = _top_p(logits, params.top_p)
    if params.min_p is not None:
        logits = _min_p(logits, params.min_p)
    return logits


def make_generator(
    seed: int | torch.Generator | None, device: torch.device | str = "cpu"
) -> torch.Generator | None:
    """A generator seeded with ``seed``, so sampling ignores the global RNG state.

    ``None`` returns ``None`` (sample from the global RNG); a generator is used as given.
    """
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    check_int("seed", seed, 0, 2**64 - 1)
    return torch.Generator(device=device).manual_seed(seed)


Observer = Callable[[torch.Tensor], None]


def next_token(
    logits: torch.Tensor,
    params: SamplingParams,
    history: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    observe: Observer | None = None,
) -> torch.Tensor:
    """The next token id per row, ``(batch,)``: argmax when greedy, otherwise a sample.

    ``history`` (``(batch, seq)`` token ids so far, prompt included as in Hugging Face) feeds
    the repetition penalty. ``observe``, if given, is called with the distribution the token is
    drawn from, ``(batch, vocab)``: the processed logits' softmax, one-hot on the argmax when
    greedy (the tokens chosen are the same as without it). No host synchronisation happens here.
    """
    if history is not None:
        logits = _repetition_penalty(logits, history, params.repetition_penalty)
    if observe is not None:
        probs = warp(logits, params).softmax(dim=-1)
        observe(probs)
        return probs.argmax(dim=-1) if params.greedy else sample(probs, generator)
    if params.greedy:
        return logits.argmax(dim=-1)
    return sample(warp(logits, params).softmax(dim=-1), generator)


def sample(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of ``probs`` (``(batch, vocab)``, rows summing to 1), as ``(batch,)``.

    Exponential race: ``argmax(p / E)`` with ``E ~ Exponential(1)`` picks ``i`` with
    probability ``p_i``. Unlike ``torch.multinomial`` it does no validating host reads per
    call, which matters at one call per token. Noise is clamped away from 0 so a removed token
    (``p = 0``) can never win through ``0 / 0``.
    """
    noise = torch.empty_like(probs).exponential_(generator=generator)
    return probs.div(noise.clamp_min_(torch.finfo(noise.dtype).tiny)).argmax(dim=-1)
