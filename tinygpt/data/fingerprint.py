"""A training text's fingerprint: what the token cache is keyed by and checkpoints record."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK_BYTES = 1 << 20


def text_fingerprint(path: str | Path) -> str:
    """The sha256 of the file's bytes, hex, read in chunks so a large text never sits in RAM.

    Its bytes, not its name, size or modification time: a copied or touched file keeps its
    fingerprint, and any edit changes it.
    """
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()
