"""Character-level text as training and validation windows, served by a LightningDataModule."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from tinygpt.download import fetch_verified
from tinygpt.errors import ConfigError, DataError
from tinygpt.tokenizer import CharTokenizer

TINY_SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
TINY_SHAKESPEARE_SIZE = 1_115_394
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def read_text(path: str | Path) -> str:
    """Read a UTF-8 text file, refusing missing, empty and binary files with a clear error."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if not path.is_file():
        raise DataError(f"data path is not a file: {path}")
    raw = path.read_bytes()
    if not raw:
        raise DataError(f"data file is empty: {path}")
    if b"\x00" in raw:
        raise DataError(f"data file looks binary (it contains NUL bytes): {path}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"data file is not UTF-8 text: {path} (byte {exc.start})") from None


def batch_seed(seed: int, batch_index: int, rank: int) -> int:
    """A generator seed that is a pure function of (seed, batch index, rank).

    Mixing with large odd constants (splitmix64's) keeps nearby triples far apart, so rank 1's
    batches are not rank 0's batches shifted by one step.
    """
    mixed = seed * 0x9E3779B97F4A7C15 + batch_index * 0xBF58476D1CE4E5B9 + rank * 0x94D049BB133111EB
    return mixed % (1 << 63)


class RandomWindows(IterableDataset):
    """An endless stream of batches of random windows, starting at batch ``start``.

    Batch ``i`` depends only on (seed, i, rank): a resumed run draws exactly the batches it would
    have drawn, and DDP ranks draw different ones.
    """

    def __init__(
        self, data: torch.Tensor, block_size: int, batch_size: int, seed: int, rank: int, start: int
    ) -> None:
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.start = start
        self.offsets = torch.arange(block_size + 1)
        self.num_starts = len(data) - block_size

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(batch_seed(self.seed, index, self.rank))
        starts = torch.randint(self.num_starts, (self.batch_size, 1), generator=generator)
        windows = self.data[starts + self.offsets]  # one gather: (batch, block_size + 1)
        return windows[:, :-1], windows[:, 1:].contiguous()

    def __iter__(self):
        index = self.start
        while True:
            yield self.batch(index)
            index += 1


def validation_windows(data: torch.Tensor, block_size: int) -> TensorDataset:
    """Every non-overlapping window of ``data``, in order, so the val loss is exact."""
    n = (len(data) - 1) // block_size
    inputs = data[: n * block_size].view(n, block_size)
    targets = data[1 : n * block_size + 1].view(n, block_size)
    return TensorDataset(inputs, targets)


class CharDataModule(L.LightningDataModule):
    """TinyShakespeare (downloaded and verified) or any UTF-8 file given as ``path``.

    Split as nanoGPT does: the first ``train_fraction`` of the tokens train, the rest validate.
    """

    def __init__(
        self,
        path: str | None = None,
        cache_dir: str = "data",
        block_size: int = 32,
        batch_size: int = 64,
        val_batch_size: int = 512,
        train_fraction: float = 0.9,
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
        self.path = path
        self.cache_dir = Path(cache_dir)
        self.block_size = block_size
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size
        self.train_fraction = train_fraction
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
        text = read_text(self.text_path)
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
