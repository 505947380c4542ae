import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict, read_write

from tinygpt.cli.resolvers import register_resolvers
from tinygpt.data.download import TINY_SHAKESPEARE_SHA256, TINY_SHAKESPEARE_SIZE, is_verified

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


def compose_task(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """A script's config as its ``@hydra.main`` function receives it, running in ``output_dir``.

    The command-line overrides go through Hydra's own parser; HydraConfig answers as in a run.
    """
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    with read_write(cfg), open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]  # as in a task function: the hydra node lives in HydraConfig
    return cfg
