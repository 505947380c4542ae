import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from tinygpt.data import TINY_SHAKESPEARE_SHA256, TINY_SHAKESPEARE_SIZE
from tinygpt.download import is_verified

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE_CANDIDATES = [
    ROOT / "data" / "tinyshakespeare.txt",
    ROOT.parent / "shared" / "data" / "tinyshakespeare.txt",
]

# A few lines repeated: enough characters for short end-to-end runs, learnable in a few steps.
TINY_TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n\n"
) * 40


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory):
    """Compiled decoding steps go to a directory of this run, not the user's ~/.cache."""
    previous = os.environ.get("TINYGPT_CACHE_DIR")
    os.environ["TINYGPT_CACHE_DIR"] = str(tmp_path_factory.mktemp("tinygpt_cache"))
    yield
    if previous is None:
        del os.environ["TINYGPT_CACHE_DIR"]
    else:
        os.environ["TINYGPT_CACHE_DIR"] = previous


@pytest.fixture
def tiny_text_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def shakespeare_cache(tmp_path_factory) -> Path:
    """A data cache directory holding the verified TinyShakespeare file, or skip."""
    for candidate in SHAKESPEARE_CANDIDATES:
        if is_verified(candidate, TINY_SHAKESPEARE_SIZE, TINY_SHAKESPEARE_SHA256):
            cache = tmp_path_factory.mktemp("data")
            shutil.copy(candidate, cache / "tinyshakespeare.txt")
            return cache
    pytest.skip("TinyShakespeare is not cached (.ci/run seeds data/ from ../shared/data)")


@pytest.fixture
def python() -> str:
    return sys.executable


class CreatesFile:
    """A pickle payload that would create a file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))
