"""Training and validation windows of a token sequence: random ones reproducible per (seed, step,
rank), and every non-overlapping one in order, in batches.

The sequence is a 1-D numpy array, typically a memory map of the token cache, or a torch
tensor. Each batch gathers only its own windows, so a split is never read into RAM whole; the
windows come out as int64 tensors, as the model's embedding and loss take them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset


def batch_seed(seed: int, batch_index: int, rank: int) -> int:
    """A generator seed that is a pure function of (seed, batch index, rank).

    Mixing with large odd constants (splitmix64's) keeps nearby triples far apart, so rank 1's
    batches are not rank 0's batches shifted by one step.
    """
    mixed = seed * 0x9E3779B97F4A7C15 + batch_index * 0xBF58476D1CE4E5B9 + rank * 0x94D049BB133111EB
    return mixed % (1 << 63)


def _as_array(data: np.ndarray | torch.Tensor) -> np.ndarray:
    return data.numpy() if isinstance(data, torch.Tensor) else data


def _gather(data: np.ndarray, starts: np.ndarray, width: int) -> torch.Tensor:
    """The windows ``data[s : s + width]`` for each start, as one (len(starts), width) tensor."""
    windows = data[starts[:, None] + np.arange(width)]  # one gather from the map
    return torch.from_numpy(windows.astype(np.int64))


@dataclass(eq=False)
class RandomWindows(IterableDataset):
    """An endless stream of batches of random windows, starting at batch ``start``.

    Batch ``i`` depends only on (seed, i, rank): a resumed run draws exactly the batches it would
    have drawn, and DDP ranks draw different ones. Lightning iterates it anew at each epoch (when
    ``trainer.limit_train_batches`` ends epochs): a new iteration continues where the last one
    stopped, so epochs change nothing in the sequence; with ``repeat`` it starts again at
    ``start``, so every epoch trains on the same batches (``trainer.overfit_batches``).
    """

    data: np.ndarray | torch.Tensor
    block_size: int
    batch_size: int
    seed: int
    rank: int
    start: int
    repeat: bool = False

    def __post_init__(self) -> None:
        self.data = _as_array(self.data)
        self.next_index = self.start  # of the batch the next iteration begins with

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(batch_seed(self.seed, index, self.rank))
        num_starts = len(self.data) - self.block_size
        starts = torch.randint(num_starts, (self.batch_size,), generator=generator)
        windows = _gather(self.data, starts.numpy(), self.block_size + 1)
        return windows[:, :-1], windows[:, 1:].contiguous()

    def __iter__(self):
        index = self.start if self.repeat else self.next_index
        while True:
            batch = self.batch(index)
            index += 1
            self.next_index = index  # before the yield: an epoch may end at any batch
            yield batch


@dataclass(eq=False)
class ValidationBatches(Dataset):
    """Every non-overlapping window of ``data``, in order, in batches of ``batch_size``, so the
    val loss is exact. With ``world`` > 1, rank ``rank`` takes every world-th window (no
    padding, no window twice); the ranks' shares together are every window once."""

    data: np.ndarray | torch.Tensor
    block_size: int
    batch_size: int
    rank: int = 0
    world: int = 1

    def __post_init__(self) -> None:
        self.data = _as_array(self.data)
        # Window w covers data[w * block_size : (w + 1) * block_size], its targets one further.
        self.windows = range(self.rank, (len(self.data) - 1) // self.block_size, self.world)

    def __len__(self) -> int:
        return -(-len(self.windows) // self.batch_size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        windows = self.windows[index * self.batch_size : (index + 1) * self.batch_size]
        starts = np.arange(windows.start, windows.stop, windows.step) * self.block_size
        batch = _gather(self.data, starts, self.block_size + 1)
        return batch[:, :-1].contiguous(), batch[:, 1:].contiguous()
