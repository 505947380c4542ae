"""Training and validation windows of a token tensor: random ones reproducible per (seed, step,
rank), and every non-overlapping one in order."""

from __future__ import annotations

import torch
from torch.utils.data import IterableDataset, TensorDataset


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
