"""Reading a training text: UTF-8, refusing missing, empty and binary files with a clear error."""

from __future__ import annotations

from pathlib import Path

from tinygpt.errors import DataError


def read_text(path: str | Path) -> str:
    """Read a UTF-8 text file, refusing missing, empty and binary files with a clear error."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if not path.is_file():
        raise DataError(f"data path is not a file: {path}")
    raw = path.read_bytes()
    if not raw:
        raise DataError(f"data file is empty: {path}")
    if b"\x00" in raw:
        raise DataError(f"data file looks binary (it contains NUL bytes): {path}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"data file is not UTF-8 text: {path} (byte {exc.start})") from None
