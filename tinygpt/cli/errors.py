"""The boundary between entry points and the library: user errors become one line and exit 2.

Hydra prints a bad override or a missing config option over several lines, with a traceback
unless HYDRA_FULL_ERROR is set; Lightning refuses a bad Trainer setting with a traceback.
Their own words are kept, on one line; an override Hydra cannot parse ends with how to quote it.
"""

import errno
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn

import hydra
import torch
from hydra.errors import (
    ConfigCompositionException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)
from omegaconf import DictConfig
from omegaconf.errors import InterpolationResolutionError

from tinygpt.cli.paths import PROJECT_ROOT, config_dir
from tinygpt.cli.quoting import quoting_hint
from tinygpt.errors import ConfigError, TinyGPTError
from tinygpt.files import os_error_behind, write_error

USER_ERROR_EXIT_CODE = 2
GRAMMAR_DOCS = "https://hydra.cc/docs/1.2/advanced/override_grammar/basic"
LEXER_ERROR = "LexerNoViableAltException: "
# A config that one of Hydra's sweep plugins provides (the `sweeps` extra of pyproject.toml):
# hydra/launcher/joblib is hydra-joblib-launcher's, hydra/sweeper/optuna hydra-optuna-sweeper's.
PLUGIN_CONFIG = re.compile(
    r"Could not (?:find|load) '(hydra/(launcher|sweeper)/(joblib|submitit|optuna)\w*)'"
)
TRAINER_TARGET = "'lightning.pytorch.trainer.trainer.Trainer'"  # in Hydra's InstantiationException
NO_GPU_HINT = " (no GPU is visible: use trainer=cpu, or trainer=default, which picks the device)"
# The OS's refusals to write: a read-only file system, no permission, a full disk or quota.
UNWRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT}


def exit_with_user_error(message: object, code: int = USER_ERROR_EXIT_CODE) -> NoReturn:
    """Print ``error: <message>`` on stderr, one line, and exit with ``code`` (2: bad input)."""
    print(f"error: {one_line(message)}", file=sys.stderr, flush=True)
    sys.exit(code)


def one_line(message: object) -> str:
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip())


def user_error(exc: BaseException) -> TinyGPTError | None:
    """The user error behind ``exc`` (None for a bug): a TinyGPTError, or Lightning's refusal of
    a setting (any error of the Trainer's constructor) as a ConfigError naming the trainer,
    which Hydra wraps when a ``_target_`` raises it, and OmegaConf when a resolver does; a
    place the OS refuses to write; Hydra's refusal of the overrides, as one line."""
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
        return ConfigError(f"trainer: {exc}{'' if torch.cuda.is_available() else NO_GPU_HINT}")
    os_error = os_error_behind(exc)
    if os_error is not None and os_error.errno in UNWRITABLE and os_error.filename:
        return write_error(os_error.filename, os_error)
    hydra_message = hydra_error_message(exc)
    return None if hydra_message is None else ConfigError(one_line(hydra_message))


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
        missing = PLUGIN_CONFIG.search(message)
        if missing:
            config, kind, plugin = missing.groups()
            return (
                f"Hydra's sweep plugin hydra-{plugin}-{kind} is not installed (no {config} "
                'config): install the sweeps extra, pip install -e ".[sweeps]"'
            )
        return message
    # Hydra's defaults list refuses e.g. `logger=null` with a bare ValueError.
    if isinstance(exc, ValueError):
        raised_in = traceback.extract_tb(exc.__traceback__)[-1].filename
        if f"{os.sep}hydra{os.sep}" in raised_in:
            return f"{exc} (a config group takes one of its options; ~GROUP drops it)"
    return None


def _parse_error(exc: OverrideParseException) -> str:
    """Hydra's parse error on one line, naming the override; its lexer's error points at a
    column with a caret on the next line, which here becomes the character there."""
    reason, *more = exc.message.splitlines()
    if reason.startswith(LEXER_ERROR):
        column = more[0].index("^") - len(LEXER_ERROR)
        reason = f"a character it cannot read here: {exc.override[column : column + 1]!r}"
    return f"Hydra cannot parse {exc.override!r}: {reason} (grammar: {GRAMMAR_DOCS})"


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
        os.environ.pop("HYDRA_FULL_ERROR")
        if saved_env is not None:
            os.environ["HYDRA_FULL_ERROR"] = saved_env
        for handler in set(root.handlers) - set(handlers):
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


def run_hydra_app(
    name: str, job: Callable[[DictConfig], object], argv: Sequence[str] | None
) -> None:
    """Run ``job`` as ``@hydra.main`` over conf/NAME.yaml, Hydra's composition errors as one line.

    With ``argv``, it runs as ``python NAME.py ARGV`` would (Hydra reads ``sys.argv``, restored
    afterwards), else with this process's command line; bugs keep their traceback.
    """
    saved_argv = sys.argv
    if argv is not None:
        sys.argv = [str(PROJECT_ROOT / f"{name}.py"), *argv]
    try:
        with hydra_scope(), user_errors():
            app = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=name)
            app(job)()
    finally:
        sys.argv = saved_argv
