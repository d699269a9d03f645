"""Dynamic batching of concurrent inference requests into one model call.

Requests from the event loop are queued; one worker thread per model takes
the first request, adds every request already waiting (and, if
``max_delay_s > 0``, those that arrive within that delay) up to
``max_batch_size`` rows, concatenates them along the batch dimension, runs the
model once and hands each request its slice.  Requests whose per-sample shapes
or dtypes differ are run in separate calls.  The event loop never waits on the
model: results come back through ``loop.call_soon_threadsafe``.

If a batched call fails, each request of the batch is retried alone so that one
bad request cannot fail the others.  Source: the dynamic batcher of Triton
(``max_batch_size``, ``max_queue_delay_microseconds``).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["BatchStats", "DynamicBatcher"]

_STOP = object()


@dataclass
class BatchStats:
    """Counters of one batcher (read without a lock: approximate while running)."""

    requests: int = 0
    batches: int = 0
    rows: int = 0
    errors: int = 0


@dataclass(slots=True)
class _Item:
    inputs: list[np.ndarray]
    rows: int
    key: tuple
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


def _set_results(pairs: list[tuple[asyncio.Future, object, bool]]) -> None:
    for fut, value, is_error in pairs:
        if fut.done():  # the client went away (cancelled)
            continue
        if is_error:
            fut.set_exception(value)  # type: ignore[arg-type]
        else:
            fut.set_result(value)


class DynamicBatcher:
    """Batch requests for ``fn(inputs: list[ndarray]) -> list[ndarray]``.

    Parameters
    ----------
    fn : callable
        The model runner; every input and output has the batch as first dimension.
    max_batch_size : int
        Most rows per call; 1 disables batching (one call per request).
    max_delay_s : float
        Extra time to wait for more requests once one is queued [s].
    name : str
        Used in the worker thread's name.
    on_batch : callable, optional
        ``on_batch(rows, seconds)`` after each model call (metrics).
    """

    def __init__(self, fn: Callable[[list[np.ndarray]], list[np.ndarray]], *, max_batch_size: int = 64,
                 max_delay_s: float = 0.0, name: str = "model",
                 on_batch: Callable[[int, float], None] | None = None):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, but got max_batch_size={max_batch_size}")
        if max_delay_s < 0:
            raise ValueError(f"max_delay_s must be >= 0, but got max_delay_s={max_delay_s}")
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.name = name
        self.on_batch = on_batch
        self.stats = BatchStats()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: list[_Item] = []  # taken from the queue but not yet run (other shape)
        self._closed = False
        self._thread = threading.Thread(target=self._worker, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    async def submit(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run the model on ``inputs`` (each ``(n, ...)``) and return its outputs for these rows.

        Raises
        ------
        RuntimeError
            If the batcher is closed.
        Exception
            Whatever the runner raised for this request.
        """
        if self._closed:
            raise RuntimeError(f"batcher of model {self.name!r} is closed")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        key = tuple((a.shape[1:], a.dtype.str) for a in inputs)
        self.stats.requests += 1
        self._queue.put(_Item(inputs, int(inputs[0].shape[0]) if inputs and inputs[0].ndim else 1, key, fut, loop))
        return await fut

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker thread after the queued requests (bounded wait)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # ----------------------------------------------------------- worker side
    def _next(self, timeout: float | None) -> object:
        if timeout is None:
            return self._queue.get()
        if timeout <= 0:
            return self._queue.get_nowait()
        return self._queue.get(timeout=timeout)

    def _collect(self) -> tuple[list[_Item], bool]:
        """Take one batch of same-key items; return (items, stop_requested)."""
        stop = False
        if self._pending:
            first = self._pending.pop(0)
        else:
            first = self._next(None)
            if first is _STOP:
                return [], True
        batch = [first]
        rows = first.rows
        # items set aside earlier that fit this batch
        keep = []
        for item in self._pending:
            if item.key == first.key and rows + item.rows <= self.max_batch_size:
                batch.append(item)
                rows += item.rows
            else:
                keep.append(item)
        self._pending = keep
        deadline = time.monotonic() + self.max_delay_s
        while rows < self.max_batch_size and not stop:
            wait = deadline - time.monotonic()
            try:
                item = self._next(wait if self.max_delay_s > 0 else 0)
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
            elif item.key == first.key and rows + item.rows <= self.max_batch_size:
                batch.append(item)
                rows += item.rows
            else:
                self._pending.append(item)
                if item.key == first.key:  # full: run now
                    break
        return batch, stop

    def _run(self, batch: list[_Item]) -> list[tuple[asyncio.Future, object, bool]]:
        t0 = time.perf_counter()
        rows = sum(i.rows for i in batch)
        try:
            if len(batch) == 1:
                inputs = batch[0].inputs
            else:
                inputs = [np.concatenate([i.inputs[k] for i in batch]) for k in range(len(batch[0].inputs))]
            outputs = self.fn(inputs)
            for o in outputs:
                if o.ndim == 0 or o.shape[0] != rows:
                    raise ValueError(f"model output of shape {o.shape} has no batch dimension of {rows} rows")
        except Exception as err:
            if len(batch) > 1:  # isolate the failing request(s)
                return [r for item in batch for r in self._run([item])]
            self.stats.errors += 1
            return [(batch[0].future, err, True)]
        finally:
            self.stats.batches += 1
            self.stats.rows += rows
            if self.on_batch is not None:
                self.on_batch(rows, time.perf_counter() - t0)
        results = []
        start = 0
        for item in batch:
            stop = start + item.rows
            results.append((item.future, [o[start:stop] for o in outputs], False))
            start = stop
        return results

    def _worker(self) -> None:
        stop = False
        while not (stop and not self._pending):
            batch, stop_now = self._collect()
            stop = stop or stop_now
            if not batch:
                continue
            results = self._run(batch)  # one result per item, in batch order
            by_loop: dict[asyncio.AbstractEventLoop, list] = {}
            for item, res in zip(batch, results, strict=True):
                by_loop.setdefault(item.loop, []).append(res)
            for loop, pairs in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_set_results, pairs)
                except RuntimeError:  # loop closed: nobody waits any more
                    pass
        # fail whatever arrived after the stop
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                try:
                    item.loop.call_soon_threadsafe(
                        _set_results, [(item.future, RuntimeError(f"batcher of model {self.name!r} is closed"), True)]
                    )
                except RuntimeError:
                    pass
