"""What the reports write, in one place: markdown tables, numbers that may be missing, the part
of a page between its results markers, PNG figures and JSON."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from tinygpt.errors import DataError
from tinygpt.files import atomic_write

START_MARKER = "<!-- results:start -->"
END_MARKER = "<!-- results:end -->"


def markdown_table(
    header: str | Sequence[str], rows: Iterable[Sequence[str]], left: int = 0
) -> str:
    """A markdown table: ``header`` (cells, or a string of them separated by " | ") and ``rows``
    of cells, the first ``left`` columns aligned left and the others right (numbers);
    ``left=0`` aligns every column left."""
    header = header.split(" | ") if isinstance(header, str) else header
    left = left or len(header)
    lines = ["| " + " | ".join(cells) + " |" for cells in [header, *rows]]
    lines.insert(1, "|" + "---|" * left + "---:|" * (len(header) - left))
    return "\n".join(lines) + "\n"


def number(value: float | None, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals, or "n/a" where it is missing (None or nan)."""
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def replace_section(text: str, body: str) -> str:
    """``text`` with everything between the results markers replaced by ``body``."""
    start, end = text.find(START_MARKER), text.find(END_MARKER)
    if start < 0 or end < start or text.count(START_MARKER) != 1:
        raise DataError(
            f"the README needs one {START_MARKER} line followed by one {END_MARKER} line"
        )
    return text[: start + len(START_MARKER)] + "\n" + body.strip("\n") + "\n" + text[end:]


def code_block(text: str) -> str:
    """``text`` indented by four spaces: a Markdown code block, which keeps its line breaks and
    spacing (TensorBoard's Text tab renders Markdown)."""
    return textwrap.indent(text, "    ", lambda line: True)


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (its folder made; a full disk leaves no half-written
    PNG); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)
    return path


def jsonable(value: Any) -> Any:
    """``value`` as JSON holds it: tensors and arrays as lists, nan as null, recursively."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value
