"""The named decoding strategies, defined once.

:data:`DECODERS` names the strategies: ``python generate.py decoder=top_k`` selects one
(conf/decoder/ reads its settings from here), the notebook's ``generate_greedy``,
``generate_top_k`` and ``generate_nucleus`` take their defaults from it, and the rows of the
TinyGPT notebook's table (:data:`tinygpt.analysis.decoding.NOTEBOOK_TABLE`) name them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
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
