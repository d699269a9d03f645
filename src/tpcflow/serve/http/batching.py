"""Dynamic batching of concurrent inference requests into one model call.

Requests are queued on the event loop.  One drain task per model takes the
requests waiting (after ``max_delay_s`` if set, to let more arrive) up to
``max_batch_size`` rows, concatenates them along the batch dimension and runs
the model once in the model's own worker thread; while that call runs, new
requests queue up and form the next batch.  Each request gets its slice of the
outputs.  Requests whose per-sample shapes or dtypes differ go in separate
calls.  The event loop never waits on the model.

There is one hand-off between the event loop and the worker thread per model
call, not per request: with the GIL, every cross-thread wake-up costs a thread
switch, and doing one per request cost more CPU than the HTTP handling itself.

Knobs and the failure rule are the services' shared ones (:mod:`tpcflow.serve.batching`): if a
batched call fails, each request of the batch is run again alone, so that one bad request cannot
fail the others.  Source: the dynamic batcher of Triton (``max_batch_size``,
``max_queue_delay_microseconds``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from tpcflow.errors import ServiceError
from tpcflow.serve.batching import check_knobs, run_isolated

__all__ = ["BatchStats", "DynamicBatcher"]


@dataclass
class BatchStats:
    """Counters of one batcher."""

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


class DynamicBatcher:
    """Batch requests for ``fn(inputs: list[ndarray]) -> list[ndarray]``.

    Parameters
    ----------
    fn : callable
        The model runner; every input and output has the batch as first dimension.
    max_batch : int
        Most rows per call; 1 disables batching (one call per request).
    max_wait : float
        Time to wait for more requests before a call that is not full [s].
    name : str
        Used in the worker thread's name.
    on_batch : callable, optional
        ``on_batch(rows, seconds)`` after each model call (metrics; worker thread).
    thread_init : callable, optional
        Called first in the worker thread (e.g. to set torch's per-thread BLAS
        thread count, which a new thread does not inherit).

    Notes
    -----
    A batcher serves one event loop (the first that submits to it).
    """

    def __init__(self, fn: Callable[[list[np.ndarray]], list[np.ndarray]], *, max_batch: int = 64,
                 max_wait: float = 0.0, name: str = "model",
                 on_batch: Callable[[int, float], None] | None = None,
                 thread_init: Callable[[], None] | None = None):
        self.max_batch, self.max_wait = check_knobs(max_batch, max_wait)
        self.fn = fn
        self.name = name
        self.on_batch = on_batch
        self.stats = BatchStats()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"batcher-{name}", initializer=thread_init)
        self._pending: deque[_Item] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task | None = None
        self._closed = False

    async def submit(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run the model on ``inputs`` (each ``(n, ...)``) and return its outputs for these rows.

        Raises
        ------
        ServiceError
            If the batcher is closed (the model was deleted or evicted).
        RuntimeError
            If used from a second event loop.
        Exception
            Whatever the runner raised for this request.
        """
        if self._closed:
            raise ServiceError(f"model {self.name!r} is being unloaded (deleted or evicted); retry the request")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError(f"batcher of model {self.name!r} is bound to another event loop")
        fut = loop.create_future()
        key = tuple((a.shape[1:], a.dtype.str) for a in inputs)
        rows = int(inputs[0].shape[0]) if inputs and inputs[0].ndim else 1
        self.stats.requests += 1
        self._pending.append(_Item(inputs, rows, key, fut))
        if self._drain_task is None:
            self._drain_task = loop.create_task(self._drain())
        return await fut

    def close(self) -> None:
        """Refuse new requests; those already queued still run, then the worker thread stops.

        Safe to call from any thread; does not wait.
        """
        if self._closed:
            return
        self._closed = True
        loop = self._loop
        if loop is None or loop.is_closed():
            self._executor.shutdown(wait=False)
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._finish()
        else:
            try:
                loop.call_soon_threadsafe(self._finish)
            except RuntimeError:  # loop closed meanwhile
                self._executor.shutdown(wait=False)

    def _finish(self) -> None:
        if self._drain_task is None:
            self._executor.shutdown(wait=False)
        # else the drain task shuts the executor down once the queue is empty

    # ----------------------------------------------------------- loop side
    def _take(self) -> list[_Item]:
        first = self._pending.popleft()
        batch = [first]
        rows = first.rows
        skipped = []
        while self._pending and rows < self.max_batch:
            item = self._pending.popleft()
            if item.key == first.key and rows + item.rows <= self.max_batch:
                batch.append(item)
                rows += item.rows
            else:
                skipped.append(item)
                if item.key == first.key:
                    break  # full
        self._pending.extendleft(reversed(skipped))
        return batch

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                if self.max_wait > 0 and sum(i.rows for i in self._pending) < self.max_batch:
                    await asyncio.sleep(self.max_wait)
                batch = self._take()
                results = await loop.run_in_executor(self._executor, self._run, batch)
                for item, (value, is_error) in zip(batch, results, strict=True):
                    if item.future.done():  # the client went away (cancelled)
                        continue
                    if is_error:
                        item.future.set_exception(value)
                    else:
                        item.future.set_result(value)
        finally:
            self._drain_task = None
            if self._closed:
                self._executor.shutdown(wait=False)

    # --------------------------------------------------------- worker side
    def _run(self, batch: list[_Item]) -> list[tuple[object, bool]]:
        results = run_isolated(self._call, batch)
        self.stats.errors += sum(isinstance(r, Exception) for r in results)
        return [(r, isinstance(r, Exception)) for r in results]

    def _call(self, batch: list[_Item]) -> list[list[np.ndarray]]:
        """One model call on the concatenated rows of ``batch``; each item's slice of the outputs."""
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
        finally:
            self.stats.batches += 1
            self.stats.rows += rows
            if self.on_batch is not None:
                self.on_batch(rows, time.perf_counter() - t0)
        results = []
        start = 0
        for item in batch:
            stop = start + item.rows
            results.append([o[start:stop] for o in outputs])
            start = stop
        return results
