"""The token cache: a text encoded once into a file of token ids, then read as a memory map.

A run never holds the text or its ids in RAM: windows are gathered from the map, whose pages
the operating system shares between every process mapping it (DDP ranks).

Where: beside the text as ``<name>.tokens``; where that directory cannot be written, in
``<cache_dir>/tokens/`` (the data cache, ``data.cache_dir``) under a name that also encodes the
text's full path. The file: one header line, ``MAGIC`` and a JSON object (format, fingerprint,
vocabulary, dtype, length) padded with spaces so that the ids start on a 64-byte boundary, then
the ids in the smallest dtype that holds the vocabulary. A cache is used
only if its header parses, its fingerprint is the text's and its size matches the header;
otherwise it is rebuilt. It is written to a temporary file and renamed into place, so a reader
sees the old file or the complete new one, never a partial one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinygpt.data.download import byte_progress, sha256_of
from tinygpt.data.text import check_text_file, code_point_chunks
from tinygpt.errors import DataError, WriteError

log = logging.getLogger(__name__)

MAGIC = b"TGTOKENS"
FORMAT = 2  # bump when the ids a text encodes to change, so older caches are rebuilt
ALIGN = 64
MAX_HEADER_BYTES = 16 << 20  # the largest vocabulary, every character JSON-escaped, fits
UNICODE_SIZE = 0x110000
PROGRESS_FROM_BYTES = 64 << 20  # smaller texts tokenize in well under a second: no bar


@dataclass(frozen=True)
class TokenCache:
    """A text's token ids, memory-mapped read-only, and what they were encoded with."""

    path: Path
    fingerprint: str
    chars: str
    tokens: np.memmap


class StaleCache(Exception):
    """The cache file cannot be used as it is; the message says why."""


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest little-endian integer type that holds every id of the vocabulary."""
    if vocab_size <= 1 << 8:
        return np.dtype("u1")
    if vocab_size <= 1 << 16:
        return np.dtype("<u2")
    return np.dtype("<i4")


def cache_locations(text_path: Path, cache_dir: Path) -> list[Path]:
    """Where a text's cache may be, in order of preference: beside it, then in ``cache_dir``."""
    text_path = Path(text_path)
    where = hashlib.sha256(str(text_path.resolve()).encode()).hexdigest()[:12]
    return [
        text_path.with_name(text_path.name + ".tokens"),
        Path(cache_dir) / "tokens" / f"{text_path.name}.{where}.tokens",
    ]


def load_or_build(
    text_path: str | Path, cache_dir: str | Path, progress: bool = True
) -> TokenCache:
    """The text's token cache, built first if no valid one exists (see the module docstring)."""
    text_path = check_text_file(text_path)
    fingerprint = sha256_of(text_path)
    places = cache_locations(text_path, Path(cache_dir))
    # One process builds; others (DDP ranks started together) wait, then find its cache. The
    # lock is released when the file closes.
    with text_path.open("rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for place in places:
            try:
                return read_cache(place, fingerprint)
            except StaleCache as exc:
                if str(exc) != "missing":
                    log.info("token cache %s is %s: rebuilding it", place, exc)
        # Build in the first place that can be written, saying so if it is not the first.
        chars, length = scan_vocabulary(text_path, progress)
        failures = []
        for place in places:
            try:
                write_cache(place, text_path, fingerprint, chars, length, progress)
            except OSError as exc:
                failures.append(f"{place.parent}: {exc.strerror or exc}")
                continue
            if failures:
                log.warning(
                    "token cache: cannot write beside the text (%s); using %s", failures[0], place
                )
            return read_cache(place, fingerprint)
    raise WriteError(
        f"cannot write {'; nor '.join(failures)} (the token cache of {text_path}); "
        "set data.cache_dir to a writable directory"
    )


def read_cache(path: Path, fingerprint: str) -> TokenCache:
    """Map the cache at ``path`` if it is complete and was built from the text ``fingerprint``
    names; else raise StaleCache."""
    try:
        with path.open("rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise StaleCache("not a token cache")
            header = json.loads(f.readline(MAX_HEADER_BYTES))  # cut short: a ValueError
            offset = f.tell()
        size = path.stat().st_size
    except FileNotFoundError:
        raise StaleCache("missing") from None
    except (OSError, ValueError) as exc:  # json's and UTF-8's errors are ValueErrors
        raise StaleCache(f"unreadable ({type(exc).__name__})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise StaleCache("of another format")
    if header.get("fingerprint") != fingerprint:
        raise StaleCache("of another text (the text changed)")
    chars, length = header.get("chars"), header.get("length")
    if not isinstance(chars, str) or not chars or not isinstance(length, int) or length < 1:
        raise StaleCache("corrupt (header)")
    dtype = token_dtype(len(chars))
    if header.get("dtype") != dtype.str or size != offset + length * dtype.itemsize:
        raise StaleCache("incomplete or corrupt (its size does not match its header)")
    tokens = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(length,))
    return TokenCache(path, fingerprint, chars, tokens)


def scan_vocabulary(text_path: Path, progress: bool = True) -> tuple[str, int]:
    """The text's sorted characters and its length in characters, in one streamed pass."""
    seen = np.zeros(UNICODE_SIZE, dtype=bool)
    seen_ascii = b""
    length = 0
    with _progress(text_path, "scanning", progress) as advance:
        for chunk in code_point_chunks(text_path, on_bytes=advance):
            length += len(chunk)
            if isinstance(chunk, bytes):
                # Only the characters not seen yet survive the deletion: usually none.
                new = chunk.translate(None, seen_ascii)
                if new:
                    seen[np.frombuffer(new, dtype=np.uint8)] = True
                    seen_ascii = bytes(np.flatnonzero(seen[:128]).tolist())
            else:
                seen[chunk] = True
    return "".join(map(chr, np.flatnonzero(seen).tolist())), length


def write_cache(
    dest: Path, text_path: Path, fingerprint: str, chars: str, length: int, progress: bool = True
) -> None:
    """Encode the text into ``dest``, atomically: a temporary file beside it, then a rename."""
    dtype = token_dtype(len(chars))
    header = dict(
        format=FORMAT, fingerprint=fingerprint, chars=chars, dtype=dtype.str, length=length
    )
    line = MAGIC + json.dumps(header, ensure_ascii=False).encode()  # newlines escaped
    line = line.ljust(-(-(len(line) + 1) // ALIGN) * ALIGN - 1) + b"\n"
    encode = _encoder(chars, dtype)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{dest.name}.*.part"):  # left by a killed build
        stale.unlink(missing_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        written = 0
        with os.fdopen(fd, "wb") as out, _progress(text_path, "tokenizing", progress) as advance:
            out.write(line)
            for chunk in code_point_chunks(text_path, on_bytes=advance):
                ids = encode(chunk)
                if ids is None:  # a character outside the vocabulary it was scanned for
                    raise DataError(f"{text_path} changed while it was being tokenized; retry")
                out.write(ids)
                written += len(chunk)
        if written != length:
            raise DataError(f"{text_path} changed while it was being tokenized; retry")
        os.replace(tmp_name, dest)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def _encoder(chars: str, dtype: np.dtype) -> Callable[[bytes | np.ndarray], bytes | None]:
    """A function from a chunk of code points to the bytes of its ids (None: a character
    outside ``chars``)."""
    lookup = np.full(UNICODE_SIZE, -1, dtype=np.int32)
    lookup[[ord(c) for c in chars]] = np.arange(len(chars), dtype=np.int32)
    # ASCII text and one-byte ids (the common case): one bytes.translate per chunk, which maps
    # each byte to its id and deletes the bytes outside the vocabulary (then the length drops).
    table = bytes(max(i, 0) for i in lookup[:256].tolist())
    outside = bytes(c for c in range(128) if lookup[c] < 0)

    def encode(chunk: bytes | np.ndarray) -> bytes | None:
        if isinstance(chunk, bytes) and dtype.itemsize == 1:
            ids = chunk.translate(table, outside)
            return ids if len(ids) == len(chunk) else None
        ids = lookup[np.frombuffer(chunk, dtype=np.uint8) if isinstance(chunk, bytes) else chunk]
        return None if len(ids) and ids.min() < 0 else ids.astype(dtype).tobytes()

    return encode


@contextmanager
def _progress(text_path: Path, verb: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A bar over the text's bytes, for texts big enough to take a noticeable time."""
    size = text_path.stat().st_size
    with byte_progress(enabled and size >= PROGRESS_FROM_BYTES) as bar:
        task = bar.add_task(f"{verb} {text_path.name}", total=size)
        yield lambda n: bar.advance(task, n)
