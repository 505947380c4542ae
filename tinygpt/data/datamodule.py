"""The LightningDataModule: a text file split into training and validation windows, per rank."""

from __future__ import annotations

from dataclasses import dataclass
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
from tinygpt.errors import DataError, require

# What the test loop (``Trainer.test``, eval.py) evaluates: a split, or the whole text.
TEST_SPLITS = ("val", "train", "all")
SPLIT_NAMES = {"train": "training split", "val": "validation split", "all": "text"}


@dataclass
class DataConfig:
    """The settings of conf/data/ (the schema OmegaConf types them by), range-checked here."""

    path: str | None = None  # any UTF-8 text file; None: TinyShakespeare, downloaded
    cache_dir: str = "data"
    block_size: int = 32
    batch_size: int = 64
    val_batch_size: int = 512
    train_fraction: float = 0.9
    max_chars: int | None = None
    seed: int = 1337
    pin_memory: bool | None = None  # None: pinned when a GPU is present

    def __post_init__(self) -> None:
        # block_size follows model.block_size in the configs, so errors name the key users set.
        for key, value in (
            ("model.block_size", self.block_size),
            ("data.batch_size", self.batch_size),
            ("data.val_batch_size", self.val_batch_size),
        ):
            require(value >= 1, f"{key} must be an integer >= 1, got {value!r}")
        fraction, max_chars = self.train_fraction, self.max_chars
        require(0 < fraction < 1, f"data.train_fraction must be in (0, 1), got {fraction!r}")
        require(
            max_chars is None or max_chars >= 1,
            f"data.max_chars must be null or an integer >= 1, got {max_chars!r}",
        )


@dataclass(eq=False)
class CharDataModule(DataConfig, L.LightningDataModule):
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

    url: str = TINY_SHAKESPEARE_URL
    size: int = TINY_SHAKESPEARE_SIZE
    sha256: str = TINY_SHAKESPEARE_SHA256
    tokenizer: CharTokenizer | None = None
    skip_unknown: bool = False
    test_split: str = "val"

    def __post_init__(self) -> None:
        L.LightningDataModule.__init__(self)
        super().__post_init__()
        splits = ", ".join(TEST_SPLITS)
        require(
            self.test_split in TEST_SPLITS,
            f"split must be one of {splits}, got {self.test_split!r}",
        )
        self.cache_dir = Path(self.cache_dir)
        # Pinned host memory lets batches copy to a GPU asynchronously (non_blocking).
        self.pin_memory = torch.cuda.is_available() if self.pin_memory is None else self.pin_memory
        self.skipped = 0
        self.fingerprint: str | None = None  # the text's (tinygpt.data.token_cache)
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
        if chars == self.tokenizer.chars:
            return tokens
        index = {c: i for i, c in enumerate(self.tokenizer.chars)}
        lookup = np.array([index.get(c, -1) for c in chars], dtype=np.int64)
        unknown = [c for c, i in zip(chars, lookup, strict=True) if i < 0]
        if unknown and not self.skip_unknown:
            raise UnknownCharactersError.naming(unknown, str(self.text_path))
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
