"""Stop strings: their validation, and where a sample's continuation first contains one.

A sample ends at the first point where its continuation (never the prompt) contains one of the
stop strings; the text returned keeps that stop string, as Hugging Face's ``stop_strings`` does
(a streamed stop string has already been shown, so keeping it makes streamed and returned text
agree). Plain Python: the generation loop feeds each row's new text as it reads it.
"""

from __future__ import annotations

from collections.abc import Sequence

from tinygpt.errors import ConfigError


def check_stop(stop: object) -> tuple[str, ...]:
    """``stop`` (``None``, a string or a list of strings) as a tuple of non-empty strings."""
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, (list, tuple)):
        raise ConfigError(f"stop must be a string or a list of strings, got {stop!r}")
    for item in stop:
        if not isinstance(item, str):
            raise ConfigError(
                f"stop must be a string or a list of strings, got {type(item).__name__} "
                f"{item!r} in the list"
            )
        if not item:
            raise ConfigError("stop strings must not be empty (every text contains '')")
    return tuple(stop)


def check_stop_characters(stops: Sequence[str], vocabulary: str) -> None:
    """Refuse a stop string the model can never write: it has characters outside the vocabulary.

    Such a string would silently never stop anything; the usual cause is a ``\\n`` typed on a
    command line, which Hydra passes on as a backslash and an ``n``.
    """
    known = set(vocabulary)
    for stop in stops:
        missing = sorted(set(stop) - known)
        if missing:
            shown = ", ".join(repr(c) for c in missing)
            hint = ""
            if "\\" in stop:
                hint = " (Hydra keeps \\n as two characters: docs/generation.md#quoting-prompt)"
            raise ConfigError(
                f"stop string {stop!r} can never be generated: {shown} not in the vocabulary{hint}"
            )


class StopStrings:
    """Cuts each row's continuation, fed in pieces, after its first stop string.

    Only the last ``len(longest stop) - 1`` characters of what a row was fed are kept between
    pieces: enough to find a stop string that straddles two pieces.
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
