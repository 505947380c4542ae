"""The boundary between entry points and the library: user errors become one line and exit 2.

Hydra prints a bad override or a missing config option over several lines, with a traceback
unless HYDRA_FULL_ERROR is set; Lightning refuses a bad Trainer setting with a traceback.
Their own words are kept, on one line; an override Hydra cannot parse ends with how to quote it.
"""

from __future__ import annotations

import errno
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
from tinygpt.errors import ConfigError, TinyGPTError
from tinygpt.files import os_error_behind, write_error

USER_ERROR_EXIT_CODE = 2
GRAMMAR_DOCS = "https://hydra.cc/docs/1.2/advanced/override_grammar/basic"
LEXER_ERROR = "LexerNoViableAltException: "
# Configs that Hydra's sweep plugins provide, and the plugin: the `sweeps` extra of pyproject.toml.
SWEEP_PLUGINS = {
    "hydra/launcher/joblib": "hydra-joblib-launcher",
    "hydra/launcher/submitit_local": "hydra-submitit-launcher",
    "hydra/launcher/submitit_slurm": "hydra-submitit-launcher",
    "hydra/sweeper/optuna": "hydra-optuna-sweeper",
}
SWEEPS_EXTRA = 'pip install -e ".[sweeps]"'
TRAINER_TARGET = "'lightning.pytorch.trainer.trainer.Trainer'"  # in Hydra's InstantiationException
NO_GPU_HINT = " (no GPU is visible: use trainer=cpu, or trainer=default, which picks the device)"
# The OS's refusals to write: a read-only file system, no permission, a full disk or quota.
UNWRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT}


def _user_error(exc: BaseException | None) -> BaseException | None:
    """The user error behind ``exc``: a TinyGPTError or Lightning's refusal of a setting (any
    error of the Trainer's constructor), which Hydra wraps when a ``_target_`` raises it, and
    OmegaConf when a resolver does; or a place the OS refuses to write, as a WriteError."""
    # Lightning's exception, if Lightning is loaded: generate.py never imports it.
    lightning = sys.modules.get("lightning.fabric.utilities.exceptions")
    trainer = False
    while isinstance(exc, (InstantiationException, InterpolationResolutionError)):
        trainer = trainer or TRAINER_TARGET in str(exc)
        # OmegaConf drops the cause (unless OC_CAUSE is set), but the context keeps it.
        exc = exc.__cause__ or exc.__context__
    if isinstance(exc, TinyGPTError):
        return exc
    if trainer or (lightning and isinstance(exc, lightning.MisconfigurationException)):
        return exc
    os_error = os_error_behind(exc)
    if os_error is not None and os_error.errno in UNWRITABLE and os_error.filename:
        return write_error(os_error.filename, os_error)
    return None


def exit_with_user_error(message: object, code: int = USER_ERROR_EXIT_CODE) -> NoReturn:
    """Print ``error: <message>`` on stderr, one line, and exit with ``code`` (2: bad input)."""
    print(f"error: {one_line(message)}", file=sys.stderr, flush=True)
    sys.exit(code)


def one_line(message: object) -> str:
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip())


@contextmanager
def user_errors() -> Iterator[None]:
    """Print a user error as ``error: ...`` on stderr and exit non-zero, without a traceback."""
    try:
        yield
    except Exception as exc:
        cause = user_error(exc)
        if cause is None:
            raise
        exit_with_user_error(cause, cause.exit_code)


def user_error(exc: BaseException) -> TinyGPTError | None:
    """The user error behind ``exc``, as a TinyGPTError (Lightning's refusal of a Trainer setting
    becomes a ConfigError naming the trainer); None for a bug."""
    cause = _user_error(exc)
    if cause is None or isinstance(cause, TinyGPTError):
        return cause
    torch = sys.modules.get("torch")
    no_gpu = torch is not None and not torch.cuda.is_available()
    return ConfigError(f"trainer: {cause}{NO_GPU_HINT if no_gpu else ''}")


def hydra_error_message(exc: BaseException) -> str | None:
    """The one line for an error Hydra raises composing a config from overrides (an override it
    cannot parse ends with how to quote it); None for any other error."""
    if isinstance(exc, OverrideParseException):
        return f"{_parse_error(exc)}; {quoting_hint(exc.override)}"
    if isinstance(exc, (ConfigCompositionException, MissingConfigException)):
        # Hydra appends its search path to a missing option; the options before it are enough.
        message = str(exc.args[0] if exc.args else exc).split("\nConfig search path")[0]
        if exc.__cause__ is not None:
            message += " " + str(exc.__cause__).splitlines()[0]
        # `key=a,b` in a single run: Hydra's own advice shows Hydra's quoting, not the shell's.
        ambiguous = re.match(r"Ambiguous value for argument '(.*)'$", message, re.MULTILINE)
        if ambiguous:
            message += f"; {quoting_hint(ambiguous.group(1))}"
        return _missing_plugin(message) or message
    # Hydra's defaults list refuses e.g. `logger=null` with a bare ValueError.
    frames = traceback.extract_tb(exc.__traceback__)
    if isinstance(exc, ValueError) and frames and f"{os.sep}hydra{os.sep}" in frames[-1].filename:
        return f"{exc} (a config group takes one of its options; ~GROUP drops it)"
    return None


@contextmanager
def hydra_scope() -> Iterator[None]:
    """Hydra raising its errors (HYDRA_FULL_ERROR) while it runs, and logging as it was before
    afterwards: Hydra points it at the job's log file, and a caller may go on."""
    saved_env = os.environ.get("HYDRA_FULL_ERROR")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        if saved_env is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_env
        for handler in set(root.handlers) - set(handlers):
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


def run_hydra_app(
    main: Callable[[], object], argv: Sequence[str] | None = None, script: Path | None = None
) -> None:
    """Run a ``@hydra.main`` function, turning Hydra's own composition errors into one line.

    With ``argv``, it runs as ``python SCRIPT ARGV`` would (Hydra reads ``sys.argv``, restored
    afterwards), else with this process's command line; bugs keep their traceback.
    """
    saved_argv = sys.argv
    if argv is not None:
        sys.argv = [str(script or saved_argv[0]), *argv]
    try:
        with hydra_scope(), user_errors():  # user_errors: a resolver's, a run directory's mkdir
            main()
    except (
        OverrideParseException,
        ConfigCompositionException,
        MissingConfigException,
        ValueError,
    ) as exc:
        message = hydra_error_message(exc)
        if message is None:
            raise
        exit_with_user_error(message)
    finally:
        sys.argv = saved_argv


def _missing_plugin(message: str) -> str | None:
    """What to install, where Hydra could not find a config that a sweep plugin provides."""
    found = re.search(r"Could not (?:find|load) '([\w/]+)'", message)
    if not found or found.group(1) not in SWEEP_PLUGINS:
        return None
    return (
        f"Hydra's sweep plugin {SWEEP_PLUGINS[found.group(1)]} is not installed (no "
        f"{found.group(1)} config): install the sweeps extra, {SWEEPS_EXTRA}"
    )


def _parse_error(exc: OverrideParseException) -> str:
    """Hydra's parse error on one line, naming the override; its lexer's error points at a
    column with a caret on the next line, which here becomes the character there."""
    lines = [ln for ln in exc.message.splitlines() if ln.strip() and not ln.startswith("See ")]
    details = [ln for ln in lines if not ln.startswith("Error parsing override")]
    detail = details[0] if details else "not an override"
    if detail.startswith(LEXER_ERROR) and len(details) > 1:
        column = len(details[1]) - 1 - len(LEXER_ERROR)  # of the caret under the override
        bad = exc.override[column] if 0 <= column < len(exc.override) else ""
        detail = f"a character it cannot read here: {bad!r}" if bad else "an unreadable character"
    return f"Hydra cannot parse {exc.override!r}: {detail} (grammar: {GRAMMAR_DOCS})"
