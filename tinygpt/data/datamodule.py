"""The LightningDataModule: a text file split into training and validation windows, per rank."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from tinygpt.data.download import (
    TINY_SHAKESPEARE_SHA256,
    TINY_SHAKESPEARE_SIZE,
    TINY_SHAKESPEARE_URL,
    fetch_verified,
)
from tinygpt.data.token_cache import load_or_build
from tinygpt.data.tokenizer import CharTokenizer, UnknownCharactersError
from tinygpt.data.windows import RandomWindows, ValidationBatches
from tinygpt.errors import ConfigError, DataError

# What the test loop (``Trainer.test``, eval.py) evaluates: a split, or the whole text.
TEST_SPLITS = ("val", "train", "all")
SPLIT_NAMES = {"train": "training split", "val": "validation split", "all": "text"}


class CharDataModule(L.LightningDataModule):
    """TinyShakespeare (downloaded and verified) or any UTF-8 file given as ``path``.

    Split as nanoGPT does: the first ``train_fraction`` of the tokens train, the rest validate.
    The text is tokenized once into a token cache (tinygpt.data.token_cache) and both splits are
    views of its memory map: every run after the first only streams the text's bytes through
    sha256 (to know the cache is the text's), and no process holds the text in RAM.

    The vocabulary is the text's own characters, or ``tokenizer``'s (a checkpoint's, to evaluate
    it on any text): then characters outside it are refused, or left out with ``skip_unknown``
    (``skipped`` counts them). ``test_dataloader`` serves ``test_split`` (val, train or all) as
    the validation windows are served: every non-overlapping window, in order. ``max_chars``
    keeps only the text's first characters (the TinyGPT notebook trained on the first 100,000),
    split the same way.
    """

    def __init__(
        self,
        path: str | None = None,
        cache_dir: str = "data",
        block_size: int = 32,
        batch_size: int = 64,
        val_batch_size: int = 512,
        train_fraction: float = 0.9,
        max_chars: int | None = None,
        seed: int = 1337,
        pin_memory: bool | None = None,
        url: str = TINY_SHAKESPEARE_URL,
        size: int = TINY_SHAKESPEARE_SIZE,
        sha256: str = TINY_SHAKESPEARE_SHA256,
        tokenizer: CharTokenizer | None = None,
        skip_unknown: bool = False,
        test_split: str = "val",
    ) -> None:
        super().__init__()
        # block_size follows model.block_size in the configs, so errors name the key users set.
        for name, value in (
            ("model.block_size", block_size),
            ("data.batch_size", batch_size),
            ("data.val_batch_size", val_batch_size),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if not 0.0 < train_fraction < 1.0:
            raise ConfigError(f"data.train_fraction must be in (0, 1), got {train_fraction!r}")
        if test_split not in TEST_SPLITS:
            raise ConfigError(f"split must be one of {', '.join(TEST_SPLITS)}, got {test_split!r}")
        if max_chars is not None and (
            not isinstance(max_chars, int) or isinstance(max_chars, bool) or max_chars < 1
        ):
            raise ConfigError(f"data.max_chars must be null or an integer >= 1, got {max_chars!r}")
        self.path = path
        self.cache_dir = Path(cache_dir)
        self.block_size = block_size
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size
        self.train_fraction = train_fraction
        self.max_chars = max_chars
        self.seed = seed
        # Pinned host memory lets batches copy to a GPU asynchronously (non_blocking).
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.url, self.size, self.sha256 = url, size, sha256
        self.tokenizer: CharTokenizer | None = tokenizer
        self.skip_unknown = skip_unknown
        self.test_split = test_split
        self.skipped = 0
        self.fingerprint: str | None = None  # the text's (tinygpt.data.fingerprint)
        self.data: np.ndarray | None = None
        self.train_data: np.ndarray | None = None
        self.val_data: np.ndarray | None = None

    @property
    def text_path(self) -> Path:
        return Path(self.path) if self.path is not None else self.cache_dir / "tinyshakespeare.txt"

    def prepare_data(self) -> None:
        if self.path is None:
            fetch_verified(self.url, self.text_path, self.size, self.sha256)

    def setup(self, stage: str | None = None) -> None:
        if self.data is None:
            cache = load_or_build(self.text_path, self.cache_dir)
            chars, data = cache.chars, cache.tokens
            if self.max_chars is not None:
                chars, data = first_characters(chars, data, self.max_chars)
            if self.tokenizer is None:
                self.tokenizer = CharTokenizer(chars)
            else:
                data = self._recode(chars, data)
            n_train = int(self.train_fraction * len(data))
            self.data, self.train_data, self.val_data = data, data[:n_train], data[n_train:]
            self.fingerprint = cache.fingerprint
        # Training needs one window plus its shifted target; evaluation at least one window.
        needed = {"test": (self.test_split,), "validate": ("val",)}.get(stage, ("train", "val"))
        for split in needed:
            tokens = self.split(split)
            if len(tokens) < self.block_size + 1:
                raise DataError(
                    f"{self.text_path}: the {SPLIT_NAMES[split]} has {len(tokens)} characters, "
                    f"fewer than one window of block_size + 1 = {self.block_size + 1}; use a "
                    "longer text or a smaller model.block_size"
                )

    def _recode(self, chars: str, tokens: np.ndarray) -> np.ndarray:
        """Ids of the vocabulary ``chars`` (the text's own) as ids of the given tokenizer. Only
        an evaluation takes this path, so the recoded ids may live in RAM."""
        assert self.tokenizer is not None
        if chars == self.tokenizer.chars:
            return tokens
        known = set(self.tokenizer.chars)
        unknown = [c for c in chars if c not in known]
        if unknown and not self.skip_unknown:
            raise UnknownCharactersError.naming(unknown, str(self.text_path))
        index = {c: i for i, c in enumerate(self.tokenizer.chars)}
        lookup = np.array([index.get(c, -1) for c in chars], dtype=np.int64)
        ids = lookup[np.asarray(tokens)]
        kept = ids[ids >= 0]
        self.skipped = len(ids) - len(kept)
        return kept

    def split(self, name: str) -> np.ndarray:
        """The tokens of split ``name`` (one of ``TEST_SPLITS``), after :meth:`setup`."""
        return {"train": self.train_data, "val": self.val_data, "all": self.data}[name]

    def _rank_and_world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def train_dataloader(self) -> DataLoader:
        rank, _ = self._rank_and_world()
        # Continue the batch sequence where a restored run left off.
        start, overfit = 0, False
        if self.trainer is not None:
            start = self.trainer.global_step * self.trainer.accumulate_grad_batches
            overfit = self.trainer.overfit_batches > 0  # the same batches every epoch
        stream = RandomWindows(
            self.train_data, self.block_size, self.batch_size, self.seed, rank, start, overfit
        )
        # Batches are built whole by the dataset: no per-sample collation, no worker processes.
        return DataLoader(stream, batch_size=None, pin_memory=self.pin_memory)

    def val_dataloader(self) -> DataLoader:
        return self._evaluation_loader(self.val_data)

    def test_dataloader(self) -> DataLoader:
        return self._evaluation_loader(self.split(self.test_split))

    def _evaluation_loader(self, tokens: np.ndarray) -> DataLoader:
        rank, world = self._rank_and_world()
        # Each rank takes every world-th window with no padding, so the loss stays exact.
        batches = ValidationBatches(tokens, self.block_size, self.val_batch_size, rank, world)
        return DataLoader(batches, batch_size=None, pin_memory=self.pin_memory)


def first_characters(chars: str, tokens: np.ndarray, count: int) -> tuple[str, np.ndarray]:
    """The first ``count`` ids of a text, renumbered over the vocabulary of that part alone (as
    the TinyGPT notebook built its vocabulary from the 100,000 characters it read)."""
    head = np.asarray(tokens[:count])
    present = np.unique(head)
    lookup = np.zeros(len(chars), dtype=head.dtype)
    lookup[present] = np.arange(len(present), dtype=head.dtype)
    return "".join(chars[i] for i in present), lookup[head]
