"""The boundary between entry points and the library: user errors become one line and exit 2."""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from hydra.errors import (
    ConfigCompositionException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)
from omegaconf.errors import InterpolationResolutionError

from tinygpt.cli.quoting import quoting_hint
from tinygpt.errors import TinyGPTError

USER_ERROR_EXIT_CODE = 2
GRAMMAR_DOCS = "https://hydra.cc/docs/1.2/advanced/override_grammar/basic"
LEXER_ERROR = "LexerNoViableAltException: "
HYDRA_FULL_ERROR = "HYDRA_FULL_ERROR"
# Configs that Hydra's sweep plugins provide, and the plugin: the `sweeps` extra of pyproject.toml.
SWEEP_PLUGINS = {
    "hydra/launcher/joblib": "hydra-joblib-launcher",
    "hydra/launcher/submitit_local": "hydra-submitit-launcher",
    "hydra/launcher/submitit_slurm": "hydra-submitit-launcher",
    "hydra/sweeper/optuna": "hydra-optuna-sweeper",
}
SWEEPS_EXTRA = 'pip install -e ".[sweeps]"'


def _user_error(exc: BaseException) -> BaseException | None:
    """The user error behind ``exc``: Hydra wraps errors raised by ``_target_`` constructors,
    OmegaConf those raised by a resolver (``${epoch_steps:...}``)."""
    while exc is not None:
        if isinstance(exc, TinyGPTError):
            return exc
        if isinstance(exc, InterpolationResolutionError):
            # OmegaConf drops the cause (unless OC_CAUSE is set), but the context keeps it.
            exc = exc.__cause__ or exc.__context__
            continue
        if not isinstance(exc, InstantiationException):
            return None
        exc = exc.__cause__
    return None


def exit_with_user_error(message: object, code: int = USER_ERROR_EXIT_CODE) -> NoReturn:
    """Print ``error: <message>`` on stderr, one line, and exit with ``code`` (2: bad input)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Print a user error as ``error: ...`` on stderr and exit non-zero, without a traceback."""
    try:
        yield
    except Exception as exc:
        cause = _user_error(exc)
        if cause is None:
            raise
        exit_with_user_error(cause, cause.exit_code)


def run_hydra_app(
    main: Callable[[], object], argv: Sequence[str] | None = None, script: Path | None = None
) -> None:
    """Run a ``@hydra.main`` function, turning Hydra's own composition errors into one line.

    Hydra reads its arguments from ``sys.argv``: with ``argv``, it runs as ``python SCRIPT
    ARGV`` would (``sys.argv`` is restored afterwards); else with this process's command line.
    Hydra prints a bad override (an unknown key, a missing config option) over several lines; it
    re-raises instead when HYDRA_FULL_ERROR is set (here, while it runs), which lets this
    function print one line. An override Hydra cannot parse ends with how to quote it. Bugs
    inside the run keep their full traceback.
    """
    full_error = os.environ.get(HYDRA_FULL_ERROR)
    os.environ[HYDRA_FULL_ERROR] = "1"
    saved = sys.argv
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    if argv is not None:
        sys.argv = [str(script or saved[0]), *argv]
    try:
        main()
    except OverrideParseException as exc:
        exit_with_user_error(f"{_parse_error(exc)}; {quoting_hint(exc.override)}")
    except (ConfigCompositionException, MissingConfigException) as exc:
        lines = str(exc.args[0] if exc.args else exc).splitlines()
        # Hydra appends its search path to a missing option; the options before it are enough.
        lines = [line for line in lines if line.strip()]
        lines = lines[: next((i for i, ln in enumerate(lines) if "search path" in ln), None)]
        if exc.__cause__ is not None:
            lines.append(str(exc.__cause__).splitlines()[0])
        message = " ".join(" ".join(line.split()) for line in lines)
        # `key=a,b` in a single run: Hydra's own advice shows Hydra's quoting, not the shell's.
        ambiguous = re.match(r"Ambiguous value for argument '(.*)'$", lines[0] if lines else "")
        if ambiguous:
            message += f"; {quoting_hint(ambiguous.group(1))}"
        exit_with_user_error(_missing_plugin(message) or message)
    except ValueError as exc:
        # Hydra's defaults list refuses e.g. `logger=null` with a bare ValueError.
        if not _raised_in_hydra(exc):
            raise
        exit_with_user_error(f"{exc} (a config group takes one of its options; ~GROUP drops it)")
    finally:
        sys.argv = saved
        if full_error is None:
            os.environ.pop(HYDRA_FULL_ERROR, None)
        else:
            os.environ[HYDRA_FULL_ERROR] = full_error
        # Hydra points logging at the job's log file; a caller that goes on (a report after its
        # sweep) logs where it did before.
        for handler in set(root.handlers) - set(handlers):
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


def _raised_in_hydra(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by Hydra's own code (composing the config), not by the run."""
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and f"{os.sep}hydra{os.sep}" in frames[-1].filename


def _missing_plugin(message: str) -> str | None:
    """What to install, where Hydra could not find a config that a sweep plugin provides."""
    found = re.search(r"Could not (?:find|load) '([\w/]+)'", message)
    plugin = SWEEP_PLUGINS.get(found.group(1)) if found else None
    if plugin is None:
        return None
    return (
        f"Hydra's sweep plugin {plugin} is not installed (no {found.group(1)} config): install "
        f"the sweeps extra, {SWEEPS_EXTRA}"
    )


def _parse_error(exc: OverrideParseException) -> str:
    """Hydra's parse error on one line, naming the override (its lexer's error names a column)."""
    lines = [ln for ln in exc.message.splitlines() if ln.strip() and not ln.startswith("See ")]
    details = [ln for ln in lines if not ln.startswith("Error parsing override")]
    detail = details[0] if details else "not an override"
    if detail.startswith(LEXER_ERROR) and len(details) > 1:
        column = len(details[1]) - 1 - len(LEXER_ERROR)  # of the caret under the override
        bad = exc.override[column] if 0 <= column < len(exc.override) else ""
        detail = f"a character it cannot read here: {bad!r}" if bad else "an unreadable character"
    return f"Hydra cannot parse {exc.override!r}: {detail} (grammar: {GRAMMAR_DOCS})"
