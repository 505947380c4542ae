"""The LightningDataModule: a text file split into training and validation windows, per rank."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from tinygpt.data.download import (
    TINY_SHAKESPEARE_SHA256,
    TINY_SHAKESPEARE_SIZE,
    TINY_SHAKESPEARE_URL,
    fetch_verified,
)
from tinygpt.data.text import read_text
from tinygpt.data.tokenizer import CharTokenizer
from tinygpt.data.windows import RandomWindows, validation_windows
from tinygpt.errors import ConfigError, DataError


class CharDataModule(L.LightningDataModule):
    """TinyShakespeare (downloaded and verified) or any UTF-8 file given as ``path``.

    Split as nanoGPT does: the first ``train_fraction`` of the tokens train, the rest validate.
    ``max_chars`` keeps only the text's first characters (the TinyGPT notebook trained on the
    first 100,000), split the same way.
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
        self.tokenizer: CharTokenizer | None = None
        self.train_data: torch.Tensor | None = None
        self.val_data: torch.Tensor | None = None

    @property
    def text_path(self) -> Path:
        return Path(self.path) if self.path is not None else self.cache_dir / "tinyshakespeare.txt"

    def prepare_data(self) -> None:
        if self.path is None:
            fetch_verified(self.url, self.text_path, self.size, self.sha256)

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is not None:
            return
        text = read_text(self.text_path)[: self.max_chars]
        tokenizer = CharTokenizer.from_text(text)
        data = tokenizer.encode(text)
        n_train = int(self.train_fraction * len(data))
        train, val = data[:n_train], data[n_train:]
        # Training needs one window plus its shifted target; validation at least one window.
        for split, tokens in (("training", train), ("validation", val)):
            if len(tokens) < self.block_size + 1:
                raise DataError(
                    f"{self.text_path}: the {split} split has {len(tokens)} characters, fewer "
                    f"than one window of block_size + 1 = {self.block_size + 1}; use a longer "
                    "text or a smaller model.block_size"
                )
        self.tokenizer, self.train_data, self.val_data = tokenizer, train, val

    def _rank_and_world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def train_dataloader(self) -> DataLoader:
        rank, _ = self._rank_and_world()
        # Continue the batch sequence where a restored run left off.
        start = 0
        if self.trainer is not None:
            start = self.trainer.global_step * self.trainer.accumulate_grad_batches
        stream = RandomWindows(
            self.train_data, self.block_size, self.batch_size, self.seed, rank, start
        )
        # Batches are built whole by the dataset: no per-sample collation, no worker processes.
        return DataLoader(stream, batch_size=None, pin_memory=self.pin_memory)

    def val_dataloader(self) -> DataLoader:
        rank, world = self._rank_and_world()
        windows = validation_windows(self.val_data, self.block_size)
        # Each rank takes every world-th window with no padding, so the loss stays exact.
        shard = torch.utils.data.Subset(windows, range(rank, len(windows), world))
        return DataLoader(shard, batch_size=self.val_batch_size, pin_memory=self.pin_memory)
