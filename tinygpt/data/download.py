"""Download a file once, verify its size and sha256, and only then move it into the cache."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from tinygpt.errors import DataError

TINY_SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
TINY_SHAKESPEARE_SIZE = 1_115_394
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
CHUNK_BYTES = 1 << 16


def sha256_of(path: str | Path) -> str:
    """The sha256 of a file's bytes, hex, read in chunks: a download's check, and the training
    text's fingerprint (the token cache's key, recorded in checkpoints), which follows the bytes,
    not the name or modification time."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_verified(path: Path, size: int, sha256: str) -> bool:
    return path.is_file() and path.stat().st_size == size and sha256_of(path) == sha256


def fetch_verified(
    url: str, dest: Path, size: int, sha256: str, timeout: float = 30.0, progress: bool = True
) -> Path:
    """Return ``dest`` holding exactly the expected bytes, downloading them if needed.

    A cached file is trusted only after its checksum matches, so the cache works offline. The
    download goes to a temporary file beside ``dest`` and is renamed into place only once
    verified: an interrupted or corrupt download never leaves a file at ``dest``.
    """
    dest = Path(dest)
    if is_verified(dest, size, sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, byte_progress(progress) as bar:
            task = bar.add_task(f"downloading {dest.name}", total=size)
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.advance(task, len(chunk))
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                raise DataError(f"could not download {url}: {reason}") from None
        got_size = tmp.stat().st_size
        if got_size != size or digest.hexdigest() != sha256:
            raise DataError(
                f"download from {url} failed verification (got {got_size} bytes, sha256 "
                f"{digest.hexdigest()[:12]}...; expected {size} bytes, sha256 {sha256[:12]}...)"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def byte_progress(enabled: bool) -> Progress:
    """A transient bar counting bytes, with their speed (downloads, tokenizing a big text)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        disable=not enabled,
        transient=True,
    )
