"""The boundary between entry points and the library: user errors become one line and exit 2."""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import (
    ConfigCompositionException,
    HydraException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)

from tinygpt.errors import TinyGPTError

USER_ERROR_EXIT_CODE = 2
GRAMMAR_DOCS = "https://hydra.cc/docs/1.2/advanced/override_grammar/basic"
LEXER_ERROR = "LexerNoViableAltException: "


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
    re-raises instead when HYDRA_FULL_ERROR is set, which lets this function print one line. An
    override Hydra cannot parse ends with how to quote it. Bugs inside the run keep their full
    traceback.
    """
    os.environ["HYDRA_FULL_ERROR"] = "1"
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
        exit_with_user_error(message)


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


def quoting_hint(override: str) -> str:
    """How to type ``override`` so that Hydra takes its value as it is: quoted for Hydra, and
    the whole argument quoted for the shell, e.g. ``"ckpt_path='outputs/a=b/last.ckpt'"``."""
    key, sep, value = override.partition("=")
    if not sep or not re.fullmatch(r"[+~]{0,2}[\w./@-]+", key):
        key, value = "ckpt_path", "outputs/a=b/last.ckpt"
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]  # quoted already, but for the shell only
    example = shell_word(f"{key}={hydra_quoted(value)}")
    return f"quote the value for Hydra, inside the shell's quotes: {example}"


def hydra_quoted(value: str) -> str:
    """``value`` in single quotes as Hydra's override grammar reads it back exactly.

    Inside quotes Hydra un-escapes only backslashes that precede a quote or the closing quote.
    """
    escaped = re.sub(r"(\\*)('|\Z)", lambda m: m[1] * 2 + ("\\'" if m[2] else ""), value)
    return f"'{escaped}'"


def hydra_value(value: str) -> str:
    """``value`` as written after ``key=`` so that Hydra reads back this string: as it is where
    Hydra's grammar takes it as plain text (a run directory's path), else quoted."""
    try:
        override = OverridesParser.create().parse_override(f"key={value}")
        plain = not override.is_sweep_override() and override.value() == value
    except HydraException:
        plain = False
    return value if plain else hydra_quoted(value)


def shell_word(text: str) -> str:
    """``text`` as one shell word: bare where it is safe, else in double quotes where they keep
    it as it is (easier to read than single quotes around single quotes), else shlex's quoting."""
    if shlex.quote(text) == text:
        return text
    if not re.search(r'["$`\\!]', text):
        return f'"{text}"'
    return shlex.quote(text)
