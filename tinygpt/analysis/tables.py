"""Markdown tables, as the report, the results page and the decoding comparison write them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]], left: int = 0) -> str:
    """A markdown table: ``header`` and ``rows`` of cells, the first ``left`` columns aligned
    left and the others right (numbers); ``left=0`` aligns every column left."""
    left = left or len(header)
    rule = "|" + "---|" * left + "---:|" * (len(header) - left)
    lines = [_row(header), rule, *(_row(cells) for cells in rows)]
    return "\n".join(lines) + "\n"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
