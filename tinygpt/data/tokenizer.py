"""Character-level tokenizer: ids are positions in the sorted set of characters."""

from __future__ import annotations

import torch

from tinygpt.errors import TinyGPTError


class UnknownCharactersError(TinyGPTError, ValueError):
    """Text contains characters that are not in the vocabulary."""

    @classmethod
    def naming(cls, missing: list[str], where: str = "") -> UnknownCharactersError:
        """The error naming the first ten ``missing`` characters (and how many more), after
        ``where`` (e.g. the text's path) if given."""
        shown = ", ".join(repr(c) for c in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        prefix = f"{where}: " if where else ""
        return cls(
            f"{prefix}text contains {len(missing)} character(s) not in the vocabulary: "
            f"{shown}{more}"
        )


class CharTokenizer:
    """Maps each character of a fixed, sorted vocabulary to its index.

    Sorting makes the ids a function of the character set alone: they never depend on hash
    seeds, on the order characters were first seen, or on which DDP rank built the tokenizer.
    """

    def __init__(self, chars: str) -> None:
        if not chars:
            raise ValueError("the vocabulary is empty")
        if list(chars) != sorted(set(chars)):
            raise ValueError("the vocabulary must be sorted characters without repeats")
        self.chars = chars
        # Sorted code points let encode() look up a whole text with one searchsorted.
        self._codepoints = torch.tensor([ord(c) for c in chars], dtype=torch.int64)

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str, skip_unknown: bool = False) -> torch.Tensor:
        """Encode text as a 1-D int64 tensor; unknown characters raise, naming them, or with
        ``skip_unknown`` are left out (``len(text) - len(ids)`` of them)."""
        if not text:
            return torch.empty(0, dtype=torch.int64)
        codepoints = torch.frombuffer(bytearray(text.encode("utf-32-le")), dtype=torch.int32)
        codepoints = codepoints.to(torch.int64)
        ids = torch.searchsorted(self._codepoints, codepoints).clamp_(max=self.vocab_size - 1)
        unknown = self._codepoints[ids] != codepoints
        if unknown.any():
            if skip_unknown:
                return ids[~unknown]
            missing = sorted({chr(c) for c in codepoints[unknown].tolist()})
            raise UnknownCharactersError.naming(missing)
        return ids

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """Ids (a list, a tensor or a numpy array such as a slice of the token cache) as text."""
        if not isinstance(ids, list):
            ids = ids.tolist()
        return "".join(self.chars[i] for i in ids)

    def to_dict(self) -> dict[str, str]:
        """Plain types only, so checkpoints holding it load with ``weights_only=True``."""
        return {"chars": self.chars}

    @classmethod
    def from_dict(cls, state: dict[str, str]) -> CharTokenizer:
        return cls(state["chars"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and other.chars == self.chars

    def __hash__(self) -> int:
        return hash(self.chars)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"
