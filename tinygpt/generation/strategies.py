"""The TinyGPT notebook's table of decoding strategies: each row a named decoder of
:data:`~tinygpt.generation.sampling.DECODERS` with the settings the row changes, which the
decoding report compares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tinygpt.generation.sampling import Decoder, named_decoder


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
    def params(self) -> Decoder:
        return named_decoder(self.decoder, **self.settings)

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
