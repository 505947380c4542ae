"""Values written for a user to paste back: quoted for Hydra's override grammar and the shell."""

import re
import shlex
from collections.abc import Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException


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


def resume_overrides(overrides: Sequence[str], run_dir: str | Path) -> list[str]:
    """``overrides`` changed to continue the run in ``run_dir`` from its last.ckpt."""
    kept = [o for o in overrides if not o.startswith(("ckpt_path=", "hydra.run.dir="))]
    return [*kept, f"hydra.run.dir={hydra_value(str(run_dir))}", "ckpt_path=last"]
