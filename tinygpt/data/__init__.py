"""Text to tokens to batches: the tokenizer, the verified download, the windows, the DataModule.

``CharDataModule`` is imported on first use: it needs Lightning, and the tokenizer and text
reader are needed without it (a checkpoint holds its tokenizer; a notebook loads it torch-only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinygpt.data.text import read_text
from tinygpt.data.tokenizer import CharTokenizer, UnknownCharactersError

if TYPE_CHECKING:
    from tinygpt.data.datamodule import CharDataModule

__all__ = ["CharDataModule", "CharTokenizer", "UnknownCharactersError", "read_text"]


def __getattr__(name: str) -> object:
    if name == "CharDataModule":
        from tinygpt.data.datamodule import CharDataModule

        return CharDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
