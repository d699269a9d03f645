"""PyTorch view of a :class:`~tpcflow.loader.root_generator.DataGenerator`.

Only this module of the ROOT loader imports torch; other frameworks use the generator's
numpy :class:`~tpcflow.loader.root_generator.Chunk` objects directly.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from tpcflow.errors import ConfigError
from tpcflow.loader.root_generator import Chunk, DataGenerator

__all__ = ["RootIterableDataset"]


class RootIterableDataset(IterableDataset):
    """Minibatches of a DataGenerator subset as torch tensors.

    Use with ``torch.utils.data.DataLoader(ds, batch_size=None, num_workers=k)``: chunks are
    shared among workers (chunk ``j`` of the epoch's order goes to worker ``j % k``), so each
    event is seen once per epoch for any ``num_workers``.

    Parameters
    ----------
    generator : DataGenerator
    subset : {"train", "validation", "all"}
    batch_size : int, optional
        Events per minibatch, cut from each chunk (the last one of a chunk may be smaller);
        None yields whole chunks.
    drop_last : bool
        Drop minibatches smaller than ``batch_size``.

    Yields
    ------
    dict
        ``x`` (B, W) float32, ``mask`` (B, W) bool, ``y`` (B,) int64/float32 when the generator
        has labels, ``entry`` (B,) int64, ``file`` (B,) int32.
    """

    def __init__(self, generator: DataGenerator, *, subset: str = "train", batch_size: int | None = None,
                 drop_last: bool = False):
        super().__init__()
        if batch_size is not None and batch_size <= 0:
            raise ConfigError(f"batch_size must be > 0 or None, but got batch_size={batch_size}")
        generator._check_subset(subset)
        self.generator = generator
        self.subset = subset
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose chunk order and shuffling are used next."""
        self.epoch = int(epoch)

    def _batches(self, chunk: Chunk) -> Iterator[dict]:
        n = len(chunk)
        step = self.batch_size or n
        for start in range(0, n, step):
            stop = min(start + step, n)
            if self.drop_last and stop - start < step:
                return
            batch = {"x": torch.from_numpy(np.ascontiguousarray(chunk.x[start:stop])),
                     "mask": torch.from_numpy(np.ascontiguousarray(chunk.mask[start:stop])),
                     "entry": torch.from_numpy(chunk.entry[start:stop]),
                     "file": torch.from_numpy(chunk.file[start:stop])}
            if chunk.y is not None:
                batch["y"] = torch.from_numpy(np.ascontiguousarray(chunk.y[start:stop]))
            yield batch

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        order = self.generator.chunk_order(self.epoch)
        for j, k in enumerate(order):
            if j % nw != wid:
                continue
            chunk = self.generator.chunk(int(k), self.subset, self.epoch)
            if len(chunk):
                yield from self._batches(chunk)
