"""The boundary between entry points and the library: user errors become one line and exit 2."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

from hydra.errors import (
    ConfigCompositionException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)

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


def exit_with_user_error(message: object) -> NoReturn:
    """Print ``error: <message>`` on stderr, one line, and exit with status 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(USER_ERROR_EXIT_CODE)


@contextmanager
def user_errors() -> Iterator[None]:
    """Print a user error as ``error: ...`` on stderr and exit non-zero, without a traceback."""
    try:
        yield
    except Exception as exc:
        cause = _user_error(exc)
        if cause is None:
            raise
        exit_with_user_error(cause)


def run_hydra_app(main: Callable[[], object]) -> None:
    """Run a ``@hydra.main`` function, turning Hydra's own composition errors into one line.

    Hydra prints a bad override (an unknown key, a missing config option) over several lines; it
    re-raises instead when HYDRA_FULL_ERROR is set, which lets this function print one line. Bugs
    inside the run keep their full traceback.
    """
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except (ConfigCompositionException, MissingConfigException, OverrideParseException) as exc:
        lines = str(exc.args[0] if exc.args else exc).splitlines()
        # Hydra appends its search path to a missing option; the options before it are enough.
        lines = [line for line in lines if line.strip()]
        lines = lines[: next((i for i, ln in enumerate(lines) if "search path" in ln), None)]
        if exc.__cause__ is not None:
            lines.append(str(exc.__cause__).splitlines()[0])
        exit_with_user_error(" ".join(" ".join(line.split()) for line in lines))
