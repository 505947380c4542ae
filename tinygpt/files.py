"""Writing outputs so that a failure leaves the previous file or none, and says which file.

Checkpoints, summaries and plots are written to a temporary file beside the target, synced to
disk and renamed over it: ``os.replace`` swaps whole files, so a crash, a full disk or a killed
process at any moment leaves the old file or the new one, never a truncated one, and a failed
write removes its temporary file. An OS error becomes one :class:`WriteError` naming the target.
"""

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from tinygpt.errors import WriteError

# Files get the permissions that open() would give them: mkstemp makes them private (0600).
_UMASK = os.umask(0)
os.umask(_UMASK)


def os_error_behind(exc: BaseException | None) -> OSError | None:
    """The OSError that ``exc`` is or was raised while handling: torch.save reports a failed
    write as a RuntimeError of its zip writer, raised during the OSError."""
    while exc is not None:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def write_error(path: str | Path, exc: OSError) -> WriteError:
    """``cannot write PATH: <the OS's reason>``, e.g. ``No space left on device``."""
    return WriteError(f"cannot write {path}: {exc.strerror or exc}")


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """A file to write ``path``'s new content into; it replaces ``path`` only once complete.

    Any error that an OS error caused (disk full, permission denied, file too large) is raised
    as a :class:`WriteError` naming ``path``; other errors propagate. Either way the temporary
    file is removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except Exception as exc:
        cause = os_error_behind(exc)
        if cause is None:
            raise
        raise write_error(path, cause) from None
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_write`."""
    with atomic_write(path, "w") as f:
        f.write(text)
