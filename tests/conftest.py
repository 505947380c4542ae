"""Fixtures every test may use; shared helpers are in helpers.py (tests/ is on sys.path)."""

import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT, TINY_TEXT

from tinygpt.data.download import TINY_SHAKESPEARE_SHA256, TINY_SHAKESPEARE_SIZE, is_verified

SHAKESPEARE_CANDIDATES = [
    ROOT / "data" / "tinyshakespeare.txt",
    ROOT.parent / "shared" / "data" / "tinyshakespeare.txt",
]


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
