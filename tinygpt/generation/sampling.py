"""Choosing the next token: the :class:`Decoder` settings, the named decoders, the logits
processors and sampling. Torch only.

Every processor is a pure function of a ``(batch, vocab)`` logits tensor that returns a new
tensor with removed tokens set to ``-inf``. Semantics follow Hugging Face transformers'
``RepetitionPenaltyLogitsProcessor``, ``TemperatureLogitsWarper``, ``TopKLogitsWarper``,
``TopPLogitsWarper`` and ``MinPLogitsWarper`` (with ``min_tokens_to_keep=1``), applied in
Hugging Face's order: temperature, top-k, top-p, min-p. Where this module chooses differently
from Hugging Face, the function's docstring says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch

from tinygpt.errors import ConfigError

MAX_NEW_TOKENS_LIMIT = 1_000_000
NEG_INF = float("-inf")


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``, or a ConfigError naming ``name`` and the range."""
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    if not isinstance(value, int) or isinstance(value, bool):  # True is an int, not a count
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")
    if value < low or (high is not None and value > high):
        too_large = " (too large)" if value >= low else ""
        raise ConfigError(f"{name} must be {allowed}, got {value}{too_large}")
    return value


def check_float(
    name: str, value: object, low: float, high: float = math.inf, low_open: bool = False
) -> float:
    """``value`` as a finite float in ``[low, high]`` (``(low, high]`` if ``low_open``), or a
    ConfigError naming ``name`` and the interval."""
    if high < math.inf:
        allowed = f"a number in {'(' if low_open else '['}{low:g}, {high:g}]"
    else:
        allowed = f"a number {'>' if low_open else '>='} {low:g}"
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")
    value = float(value)
    # NaN fails every comparison, so it is refused with inf by the finiteness test.
    if not math.isfinite(value) or value < low or value > high or (low_open and value == low):
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")
    return value


@dataclass(frozen=True)
class Decoder:
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
        checked = {
            "temperature": check_float("temperature", self.temperature, 0.0),
            "top_k": None if self.top_k is None else check_int("top_k", self.top_k, 1),
            "top_p": None if self.top_p is None else check_float("top_p", self.top_p, 0, 1, True),
            "min_p": None if self.min_p is None else check_float("min_p", self.min_p, 0.0, 1.0),
            "repetition_penalty": check_float(
                "repetition_penalty", self.repetition_penalty, 0.0, low_open=True
            ),
        }
        for name, value in checked.items():  # frozen: normalised values written this way
            object.__setattr__(self, name, value)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


DECODERS: dict[str, Decoder] = {
    "sampling": Decoder(),  # temperature 1, nothing filtered
    "greedy": Decoder(temperature=0.0),
    "temperature": Decoder(temperature=0.8),
    "top_k": Decoder(top_k=10),
    "nucleus": Decoder(top_p=0.9),
    "min_p": Decoder(min_p=0.05),
    # The notebook's generateV2 call: temperature, then top-k, then top-p.
    "combined": Decoder(temperature=0.8, top_k=10, top_p=0.9),
}


def named_decoder(name: str = "sampling", **overrides: object) -> Decoder:
    """The decoder called ``name`` in :data:`DECODERS`, with ``overrides`` in place of its own
    settings (``python generate.py decoder=top_k decoder.top_k=5`` is ``named_decoder("top_k",
    top_k=5)``). An unknown name or setting, or a bad value, is a ConfigError naming it."""
    if name not in DECODERS:
        raise ConfigError(f"decoder.name must be one of {', '.join(DECODERS)}, got {name!r}")
    unknown = sorted(set(overrides) - {f.name for f in fields(Decoder)})
    if unknown:
        raise ConfigError(f"unknown decoder parameter(s): {', '.join(unknown)}")
    return replace(DECODERS[name], **overrides)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide by ``temperature``; ``0`` keeps only the argmax (the first one on ties).

    Hugging Face refuses ``temperature=0`` and asks for greedy decoding instead; here it *is*
    greedy, expressed as a filter so that sampling from the result returns the argmax.
    """
    if temperature == 0.0:
        keep = torch.zeros_like(logits, dtype=torch.bool)
        keep.scatter_(-1, logits.argmax(dim=-1, keepdim=True), True)
        return logits.masked_fill(~keep, NEG_INF)
    return logits if temperature == 1.0 else logits / temperature


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the ``top_k`` largest logits per row; ``top_k`` >= vocabulary keeps them all.

    As in Hugging Face, every token tied with the k-th largest value is kept, so a row with
    ties at the boundary keeps more than ``top_k`` tokens.
    """
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
    return _drop_tail(logits, 1.0 - top_p)


def _drop_tail(logits: torch.Tensor, mass: float | torch.Tensor) -> torch.Tensor:
    # 1 - top_p is taken by the caller, in double precision: in float32 it can round to
    # another value, and the compiled step must cut where the eager one does.
    sorted_logits = torch.sort(logits, dim=-1).values
    removed = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= mass
    removed[..., -1] = False  # the most probable token always stays
    smallest_kept = sorted_logits.masked_fill(removed, math.inf).amin(dim=-1, keepdim=True)
    return logits.masked_fill(logits < smallest_kept, NEG_INF)


def min_p_filter(logits: torch.Tensor, min_p: float | torch.Tensor) -> torch.Tensor:
    """Drop tokens whose probability is below ``min_p`` times the top token's probability.

    ``min_p=0`` keeps every token; ``min_p=1`` keeps the most probable token and its ties.
    """
    probs = logits.softmax(dim=-1)
    return logits.masked_fill(probs < min_p * probs.amax(dim=-1, keepdim=True), NEG_INF)


def repetition_penalty(
    logits: torch.Tensor, token_ids: torch.Tensor, penalty: float
) -> torch.Tensor:
    """Penalise every token that occurs in ``token_ids`` (``(batch, seq)``), once per token.

    As in Hugging Face (CTRL's rule): a positive logit is divided by ``penalty``, a negative
    one multiplied by it, so ``penalty > 1`` discourages repeats and ``< 1`` encourages them.
    Apply it to the raw logits, before temperature and the filters.
    """
    if penalty == 1.0 or token_ids.size(-1) == 0:
        return logits
    seen = logits.gather(-1, token_ids)
    penalised = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(-1, token_ids, penalised)


def filter_logits(logits: torch.Tensor, decoder: Decoder) -> torch.Tensor:
    """Temperature, then top-k, top-p and min-p, as Hugging Face orders its warpers; filters
    that are off are skipped."""
    logits = apply_temperature(logits, decoder.temperature)
    if decoder.top_k is not None:
        logits = top_k_filter(logits, decoder.top_k)
    if decoder.top_p not in (None, 1.0):
        logits = top_p_filter(logits, decoder.top_p)
    if decoder.min_p:
        logits = min_p_filter(logits, decoder.min_p)
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
    decoder: Decoder,
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
        logits = repetition_penalty(logits, history, decoder.repetition_penalty)
    if decoder.greedy and observe is None:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits, decoder).softmax(dim=-1)
    if observe is not None:
        observe(probs)
    return probs.argmax(dim=-1) if decoder.greedy else sample(probs, generator)


def sample(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of ``probs`` (``(batch, vocab)``, rows summing to 1), as ``(batch,)``.

    Exponential race: ``argmax(p / E)`` with ``E ~ Exponential(1)`` picks ``i`` with
    probability ``p_i``. Unlike ``torch.multinomial`` it does no validating host reads per
    call, which matters at one call per token.
    """
    return race(probs, torch.empty_like(probs).exponential_(generator=generator))


def race(probs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """:func:`sample`'s choice given its Exponential(1) ``noise``. Noise is clamped away from 0
    so a removed token (``p = 0``) can never win through ``0 / 0``."""
    return probs.div(noise.clamp_min(torch.finfo(noise.dtype).tiny)).argmax(dim=-1)


def sampling_tensors(
    decoder: Decoder, vocab_size: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``decoder`` as the tensors :func:`choose` reads, so one compiled graph serves them all
    (the repetition penalty, which needs the history, is left out).

    Returns float32 ``(greedy, temperature, 1 - top_p, min_p)`` and int64 ``top_k``. A filter
    that is off gets the value that keeps every token (top-k the vocabulary, top-p 1, min-p 0).
    """
    # Greedy divides by 1 (its choice is the argmax); top_p is never 0, so None reads as 1.
    temperature, top_p = decoder.temperature or 1.0, decoder.top_p or 1.0
    values = [float(decoder.greedy), temperature, 1.0 - top_p, decoder.min_p or 0.0]
    top_k = min(decoder.top_k or vocab_size, vocab_size)
    settings = torch.tensor(values, dtype=torch.float32, device=device)
    return settings, torch.tensor(top_k, device=device)  # int64, as every Python int


def choose(
    logits: torch.Tensor, values: torch.Tensor, top_k: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """:func:`next_token` without a repetition penalty, written for a compiled graph: the
    settings are the tensors of :func:`sampling_tensors` and the sampling noise is given.

    The same filters as :func:`filter_logits`, then :func:`race`, so it picks the same token; a
    filter that is off keeps every token here where :func:`filter_logits` skips it. Top-k reads
    the k-th largest value from a sort, as k is a tensor here (ties with it kept, as in torch.topk).
    """
    greedy, temperature, tail, min_p = values.unbind(0)
    scaled = logits / temperature
    descending = torch.sort(scaled, dim=-1, descending=True).values
    kth_largest = descending.gather(-1, (top_k - 1).expand(logits.size(0), 1))
    scaled = scaled.masked_fill(scaled < kth_largest, NEG_INF)
    scaled = min_p_filter(_drop_tail(scaled, tail), min_p)
    sampled = race(scaled.softmax(dim=-1), noise)
    return torch.where(greedy > 0, logits.argmax(dim=-1), sampled)
