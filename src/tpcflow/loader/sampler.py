"""Entry order per epoch and per rank: sequential, random blocks, random events.

The sharding follows ``torch.utils.data.DistributedSampler`` (torch/utils/data/distributed.py):
the epoch's order is drawn from ``seed + epoch`` (same on every rank), padded by repeating
its head until it divides by ``world_size`` (or cut, with ``drop_last``), and rank ``r``
takes ``order[r::world_size]``.  Random-blocks mode gives each rank a contiguous chunk of
the order instead, so that blocks stay contiguous.  The shuffles use numpy's PCG64, so the
orders differ from torch's, but the guarantees are the same: every rank sees the same number
of entries, the shards are disjoint apart from the padding, and every entry appears once
per epoch.  No MPI is needed: each rank only needs ``rank`` and ``world_size``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from tpcflow.errors import ConfigError

__all__ = ["SEQUENTIAL", "RANDOM_BLOCKS", "RANDOM_EVENTS", "EntrySampler"]

SEQUENTIAL, RANDOM_BLOCKS, RANDOM_EVENTS = 0, 1, 2


class EntrySampler:
    """Entry indices of each epoch for one rank.

    Parameters
    ----------
    n_entries : int
        Entries in the dataset.
    batch_size : int
        Minibatch size (also the block length in random-blocks mode).
    mode : {0, 1, 2}
        larcv ``RandomAccess``: 0 sequential, 1 random blocks, 2 random events.
    seed : int
        Shuffles of epoch ``e`` use ``seed + e``.
    rank, world_size : int
        This process's shard.
    drop_last : bool
        Drop the tail so that every rank and every batch is full (torch semantics).

    Raises
    ------
    ConfigError
        Bad rank / world size / batch size, or ``drop_last`` leaving no batch.
    """

    def __init__(self, n_entries, batch_size, *, mode=0, seed=0, rank=0, world_size=1, drop_last=False):
        if n_entries <= 0:
            raise ConfigError("the dataset has no entries")
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be > 0, but got batch_size={batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"need 0 <= rank < world_size, but got rank={rank}, world_size={world_size}")
        if mode not in (0, 1, 2):
            raise ConfigError(f"RandomAccess must be 0, 1 or 2, but got {mode}")
        self.n_entries = int(n_entries)
        self.batch_size = int(batch_size)
        self.mode = int(mode)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.drop_last = bool(drop_last)
        if drop_last and self.n_entries // world_size == 0:
            raise ConfigError(f"drop_last with {n_entries} entries leaves nothing for {world_size} ranks")
        if drop_last and len(self) == 0:
            raise ConfigError(
                f"batch_size={batch_size} is larger than the {self.num_samples} entries of rank {rank} "
                "and drop_last=True: no batch would be made"
            )

    @property
    def num_samples(self) -> int:
        """Entries per rank per epoch."""
        if self.drop_last:
            return self.n_entries // self.world_size
        return math.ceil(self.n_entries / self.world_size)

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's global order (same on every rank), before padding."""
        n = self.n_entries
        if self.mode == SEQUENTIAL:
            return np.arange(n, dtype=np.int64)
        rng = np.random.default_rng(self.seed + epoch)
        if self.mode == RANDOM_EVENTS:
            return rng.permutation(n).astype(np.int64)
        starts = np.arange(0, n, self.batch_size)
        blocks = [np.arange(s, min(s + self.batch_size, n), dtype=np.int64) for s in rng.permutation(starts)]
        return np.concatenate(blocks)

    def entries(self, epoch: int) -> np.ndarray:
        """This rank's entries for ``epoch``, in reading order: (num_samples,) int64."""
        idx = self.order(epoch)
        total = self.num_samples * self.world_size
        if total > len(idx):
            reps = math.ceil((total - len(idx)) / len(idx))
            idx = np.concatenate([idx] + [idx] * reps)[:total]
        else:
            idx = idx[:total]
        if self.mode == RANDOM_BLOCKS:
            return idx[self.rank * self.num_samples : (self.rank + 1) * self.num_samples]
        return idx[self.rank : total : self.world_size]

    def batches(self, epoch: int) -> list[np.ndarray]:
        """This rank's minibatches for ``epoch`` (the last may be short unless ``drop_last``)."""
        e = self.entries(epoch)
        out = [e[i : i + self.batch_size] for i in range(0, len(e), self.batch_size)]
        if self.drop_last and out and len(out[-1]) < self.batch_size:
            out.pop()
        return out

    def epochs(self, start_epoch: int = 0) -> Iterator[tuple[int, int, np.ndarray]]:
        """Endless (epoch, batch index, entries) over consecutive epochs."""
        epoch = start_epoch
        while True:
            for i, b in enumerate(self.batches(epoch)):
                yield epoch, i, b
            epoch += 1

    def stream(self, start_epoch: int = 0) -> Iterator[tuple[int, int, np.ndarray]]:
        """Endless full batches of ``batch_size`` entries, running on across epoch ends (larcv style).

        Yields (epoch of the first entry, batch counter, entries).
        """
        buf = np.zeros(0, dtype=np.int64)
        epoch, count = start_epoch, 0
        first_epoch = epoch
        while True:
            while len(buf) < self.batch_size:
                if len(buf) == 0:
                    first_epoch = epoch
                buf = np.concatenate([buf, self.entries(epoch)])
                epoch += 1
            yield first_epoch, count, buf[: self.batch_size]
            buf = buf[self.batch_size :]
            first_epoch = epoch - 1 if len(buf) else epoch
            count += 1
