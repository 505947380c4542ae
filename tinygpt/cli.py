"""The boundary between entry points and the library: user errors become one line and exit 2."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.errors import InstantiationException

from tinygpt.errors import TinyGPTError

USER_ERROR_EXIT_CODE = 2


def _user_error(exc: BaseException) -> BaseException | None:
    """The user error behind ``exc``: Hydra wraps errors raised by ``_target_`` constructors."""
    while exc is not None:
        if isinstance(exc, TinyGPTError):
            return exc
        if not isinstance(exc, InstantiationException):
            return None
        exc = exc.__cause__
    return None


@contextmanager
def user_errors() -> Iterator[None]:
    """Print a user error as ``error: ...`` on stderr and exit non-zero, without a traceback."""
    try:
        yield
    except Exception as exc:
        cause = _user_error(exc)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr, flush=True)
        sys.exit(USER_ERROR_EXIT_CODE)
