"""The named decoding strategies, defined once.

:data:`DECODERS` names the strategies: ``python generate.py decoder=top_k`` selects one
(conf/decoder/ reads its settings from here), the notebook's ``generate_greedy``,
``generate_top_k`` and ``generate_nucleus`` take their defaults from it, and the decoding report
compares :data:`NOTEBOOK_STRATEGIES`, the TinyGPT notebook's table, as named decoders with the
settings each row changes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from tinygpt.errors import ConfigError
from tinygpt.generation.sampling import SamplingParams
from tinygpt.generation.stop_strings import check_stop

DECODERS: dict[str, SamplingParams] = {
    "sampling": SamplingParams(),  # temperature 1, nothing filtered
    "greedy": SamplingParams(temperature=0.0),
    "temperature": SamplingParams(temperature=0.8),
    "top_k": SamplingParams(top_k=10),
    "nucleus": SamplingParams(top_p=0.9),
    "min_p": SamplingParams(min_p=0.05),
    # The notebook's generateV2 call: temperature, then top-k, then top-p.
    "combined": SamplingParams(temperature=0.8, top_k=10, top_p=0.9),
}
SETTINGS = tuple(f.name for f in fields(SamplingParams))


def named(name: str) -> SamplingParams:
    """The settings of the decoder called ``name``; a ConfigError names the decoders there are."""
    try:
        return DECODERS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"decoder.name must be one of {', '.join(DECODERS)}, got {name!r}"
        ) from None


def decoder_setting(name: str, key: str) -> Any:
    """One setting of the decoder ``name``, as conf/decoder/_base.yaml reads each key; an
    unknown name reads the plain sampler's, and :func:`decoder` refuses it with a clear error
    (an error raised while OmegaConf resolves a value loses its cause)."""
    return getattr(DECODERS.get(name, DECODERS["sampling"]), key)


@dataclass(frozen=True)
class Decoder:
    """A decoder as conf/decoder/ configures it: its name, how the next token is chosen, and the
    strings that end a sample."""

    name: str
    params: SamplingParams
    stop: tuple[str, ...] = ()

    def record(self) -> dict[str, Any]:
        """Its settings as samples.json records them: name, sampling settings, stop strings."""
        return {"name": self.name, **asdict(self.params), "stop": list(self.stop)}


def decoder(name: str = "sampling", stop: object = None, **settings: Any) -> Decoder:
    """conf/decoder/'s ``_target_``: the decoder ``name`` with ``settings`` in place of its own.

    An unknown setting (``+decoder.top_a=1``) or a bad value is a ConfigError naming it.
    """
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"unknown decoder parameter(s): {', '.join(unknown)}")
    return Decoder(name, replace(named(name), **settings), check_stop(stop))


@dataclass(frozen=True)
class Strategy:
    """A row of the TinyGPT notebook's table of decoding strategies: a named decoder, the
    settings the row changes, and the notebook's rating of its text and its recommended use."""

    name: str
    decoder: str
    settings: dict[str, Any] = field(default_factory=dict)
    claimed: tuple[str, str] = ("", "")  # the notebook's (coherence, diversity)
    use: str = ""  # the notebook's "recommended use"
    label: str = ""  # the notebook's name for the row, where it is longer than ``name``

    @property
    def params(self) -> SamplingParams:
        return replace(named(self.decoder), **self.settings)

    @property
    def notebook_label(self) -> str:
        return self.label or self.name

    @property
    def claim(self) -> str:
        """The notebook's rating as its table reads, coherence / diversity: ``high / medium``."""
        return " / ".join(self.claimed)

    def table_settings(self) -> dict[str, Any]:
        """The three settings the notebook's table varies (min-p and the penalty stay off)."""
        params = self.params
        return {"temperature": params.temperature, "top_k": params.top_k, "top_p": params.top_p}


# The TinyGPT notebook's table, as it is written: its row label, coherence, diversity, use.
NOTEBOOK_STRATEGIES = (
    Strategy("greedy", "greedy", {}, ("high", "low"), "technical text, consistency"),
    Strategy(
        "temperature 0.5", "temperature", {"temperature": 0.5}, ("high", "medium"), "formal writing"
    ),
    Strategy(
        "temperature 1.5",
        "temperature",
        {"temperature": 1.5},
        ("low", "high"),
        "creativity, brainstorming",
    ),
    Strategy(
        "top-k 5", "top_k", {"top_k": 5}, ("medium", "medium"), "general balance", "top-k (k=5)"
    ),
    Strategy(
        "nucleus 0.9", "nucleus", {}, ("medium", "high"), "creative narrative", "nucleus (p=0.9)"
    ),
    Strategy(
        "combined",
        "combined",
        {},
        ("high", "high"),
        "best balance observed",
        "combined (T 0.8, top-k 10, top-p 0.9)",
    ),
)
