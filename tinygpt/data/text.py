"""Reading a training text: UTF-8, refusing missing, empty and binary files with a clear error.

Whole (:func:`read_text`, for prompts and small files) or streamed in chunks of code points
(:func:`code_point_chunks`, for a corpus that must never sit in RAM as one string).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from tinygpt.errors import DataError

CHUNK_BYTES = 1 << 22


def check_text_file(path: str | Path) -> Path:
    """``path`` as a Path if it names a non-empty file, else a DataError saying what it is."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if not path.is_file():
        raise DataError(f"data path is not a file: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"data file is empty: {path}")
    return path


def read_text(path: str | Path) -> str:
    """Read a UTF-8 text file, refusing missing, empty and binary files with a clear error."""
    path = check_text_file(path)
    raw = path.read_bytes()
    _refuse_binary(raw, path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc.start) from None


def code_point_chunks(
    path: str | Path,
    chunk_bytes: int | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> Iterator[bytes | np.ndarray]:
    """The text's characters as Unicode code points, chunk by chunk, in order.

    A chunk of ASCII text comes back as ``bytes`` (each byte is its character's code point),
    any other as a uint32 array: the common case is never widened or even decoded, and bytes
    have fast C methods (``translate``) that numpy's gathers do not match. Other bytes are decoded
    incrementally, so a character split across two chunks is read whole, with the same checks as
    :func:`read_text`. ``on_bytes`` is told how many bytes each chunk read (a progress bar).
    ``chunk_bytes``: CHUNK_BYTES.
    """
    path = check_text_file(path)
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # of the chunk's first byte in the file
    with path.open("rb") as f:
        while True:
            raw = f.read(chunk_bytes)
            _refuse_binary(raw, path)
            held = decoder.getstate()[0]  # the start of a character cut by the last chunk
            if raw and not held and raw.isascii():
                yield raw
            else:
                try:
                    text = decoder.decode(raw, final=not raw)
                except UnicodeDecodeError as exc:
                    # exc.start counts from the bytes the decoder held back from the last chunk.
                    raise _not_utf8(path, offset - len(held) + exc.start) from None
                if text.isascii():
                    yield text.encode("ascii")
                else:
                    yield np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
            if not raw:
                return
            offset += len(raw)
            if on_bytes is not None:
                on_bytes(len(raw))


def _refuse_binary(raw: bytes, path: Path) -> None:
    if b"\x00" in raw:
        raise DataError(f"data file looks binary (it contains NUL bytes): {path}")


def _not_utf8(path: Path, byte: int) -> DataError:
    return DataError(f"data file is not UTF-8 text: {path} (byte {byte})")
