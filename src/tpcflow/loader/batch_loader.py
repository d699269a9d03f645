"""BatchLoader: iterate a ThreadProcessor's minibatches by epoch, per rank, as numpy or torch.

``for batch in loader:`` yields ``{filler name: array}``.  Arrays are views into the
storage slot (no copy) and stay valid until the next batch is taken: taking the next
batch releases the previous slot, which is then refilled.  Pass ``copy=True`` (numpy) to
keep batches longer; ``to_torch=True`` converts through :mod:`tpcflow.loader.torch`
(``pin_memory=True`` copies into pinned memory when CUDA is available).

Prefetching runs on across epoch ends: while epoch ``e`` is consumed, the workers already
fill the first batches of ``e + 1``.  Leaving the loop early (``break``, an exception, Ctrl-C)
stops the workers (torch's non-persistent workers); the next ``iter()`` restarts them.
"""

from __future__ import annotations

import numpy as np

from tpcflow.errors import ConfigError
from tpcflow.loader.processor import ThreadProcessor
from tpcflow.loader.sampler import RANDOM_EVENTS, SEQUENTIAL, EntrySampler

__all__ = ["BatchLoader"]


class BatchLoader:
    """Epoch iterator over minibatches filled by a :class:`ThreadProcessor`.

    Parameters
    ----------
    config_or_processor : dict, str, Path, ProcessorConfig or ThreadProcessor
    batch_size : int
        Entries per minibatch (the last batch of an epoch may be shorter unless ``drop_last``).
    to_torch : bool
        Yield torch tensors instead of numpy arrays.
    pin_memory : bool
        With ``to_torch``, copy into pinned memory (only if ``torch.cuda.is_available()``).
    rank, world_size : int
        Shard of this process (torch ``DistributedSampler`` semantics; no MPI).
    shuffle : bool, optional
        Overrides ``RandomAccess``: True -> random events (2), False -> sequential (0).
    drop_last : bool
        Drop the short tail (per rank and per epoch).
    seed : int, optional
        Shuffle seed (default: the config's ``RandomSeed``); epoch ``e`` uses ``seed + e``.
    copy : bool
        Copy numpy batches out of the slot (they then survive the next batch).

    Attributes
    ----------
    epoch : int
        Epoch of the current (or next) iteration.
    last_event_ids : (B, 3) int64
        run / subrun / event of the last batch yielded; ``last_entries`` its entries.

    Raises
    ------
    ConfigError
        Bad rank / world size / batch size, or ``drop_last`` with a batch larger than the shard.
    """

    def __init__(
        self,
        config_or_processor,
        batch_size: int,
        *,
        to_torch: bool = False,
        pin_memory: bool = False,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool | None = None,
        drop_last: bool = False,
        seed: int | None = None,
        copy: bool = False,
    ):
        if isinstance(config_or_processor, ThreadProcessor):
            self.processor = config_or_processor
        else:
            self.processor = ThreadProcessor(config_or_processor)
        cfg = self.processor.config
        mode = cfg.random_access if shuffle is None else (RANDOM_EVENTS if shuffle else SEQUENTIAL)
        if pin_memory and not to_torch:
            raise ConfigError("pin_memory=True needs to_torch=True")
        self.sampler = EntrySampler(
            len(self.processor),
            batch_size,
            mode=mode,
            seed=cfg.random_seed if seed is None else seed,
            rank=rank,
            world_size=world_size,
            drop_last=drop_last,
        )
        self.batch_size = int(batch_size)
        self.to_torch = bool(to_torch)
        self.pin_memory = bool(pin_memory)
        self.copy = bool(copy)
        self.epoch = 0
        self.last_event_ids = np.zeros((0, 3), np.int64)
        self.last_entries = np.zeros(0, np.int64)
        self._planned_epoch: int | None = None  # epoch the prefetch plan is positioned at
        self._start_batch = 0
        self._convert = None
        if self.to_torch:
            from tpcflow.loader.torch import batch_to_torch

            self._convert = batch_to_torch

    def __len__(self) -> int:
        """Minibatches per epoch on this rank."""
        return len(self.sampler)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Set the epoch of the next iteration (as ``DistributedSampler.set_epoch``).

        ``start_batch`` skips the first batches of that epoch without reading them (to resume
        a run mid-epoch); the next iteration then yields ``len(self) - start_batch`` batches.
        """
        if not 0 <= start_batch <= len(self):
            raise ConfigError(f"start_batch must be in [0, {len(self)}], but got start_batch={start_batch}")
        self.epoch = int(epoch)
        self._start_batch = int(start_batch)  # the prefetched plan is kept if it already fits

    def _plan(self, epoch: int, start_batch: int = 0):
        it = self.sampler.epochs(epoch)
        for _ in range(start_batch):
            next(it)
        return (((e, i), b) for e, i, b in it)

    def __iter__(self):
        proc = self.processor
        rt = proc._start(self.batch_size)
        start, self._start_batch = self._start_batch, 0
        if start or self._planned_epoch != self.epoch or rt.plan is None or proc._rt is not rt:
            rt.restart(self._plan(self.epoch, start))
        rt.auto = True
        rt.dispatch()
        epoch, n = self.epoch, len(self) - start
        held = None
        finished = False
        try:
            for _ in range(n):
                sid = proc.next_filled()
                if held is not None:
                    proc.release_data(held)
                    held = None
                held = sid
                self.last_entries = proc.entries(sid)
                self.last_event_ids = proc.event_ids(sid)
                batch = proc.batch(sid)
                if self._convert is not None:
                    batch = self._convert(batch, pin_memory=self.pin_memory, copy=self.copy)
                elif self.copy:
                    batch = {k: v.copy() for k, v in batch.items()}
                yield batch
            finished = True
        finally:
            if held is not None and proc.running:
                try:
                    proc.release_data(held)
                except (ValueError, RuntimeError):
                    pass
            if finished:
                self.epoch = epoch + 1
                self._planned_epoch = self.epoch  # the plan already continues with the next epoch
            else:
                self._planned_epoch = None
                proc.stop_manager()

    def close(self) -> None:
        """Stop the workers (the loader can be iterated again; workers restart)."""
        self.processor.stop_manager()
        self._planned_epoch = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
