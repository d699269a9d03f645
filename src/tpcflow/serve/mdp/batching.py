"""Dynamic batching: gather requests until ``max_batch`` or ``max_wait``, then run one batch.

The worker's socket thread puts jobs on a queue; one processing thread takes a first job
(blocking), then keeps taking more until the batch is full or ``max_wait`` seconds have passed
since the first, and calls the batch handler once. Results go back through ``deliver``.
Knobs and the failure rule are the services' shared ones (:mod:`tpcflow.serve.batching`).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import zmq

from tpcflow.serve.batching import check_knobs, run_isolated

__all__ = ["Batcher", "Job", "Waker", "per_request", "run_batch"]

log = logging.getLogger(__name__)

#: handler(list of request bodies) -> list of reply bodies (or an Exception per failed request)
BatchHandler = Callable[[list], list]


@dataclass
class Job:
    """One request in the worker: where to reply and its body frames."""

    slot: int
    generation: int
    client: bytes
    rid: int | None
    body: list


def per_request(fn: Callable[[list], list]) -> BatchHandler:
    """Adapt ``fn(body) -> reply`` to a batch handler; an exception fails only its request."""

    def handler(bodies: list) -> list:
        out = []
        for body in bodies:
            try:
                out.append(fn(body))
            except Exception as err:  # handed back to that request's client as an error reply
                out.append(err)
        return out

    handler.__name__ = getattr(fn, "__name__", "handler")
    return handler


def run_batch(handler: BatchHandler, bodies: list) -> list:
    """Call ``handler(bodies)``; return one reply or Exception per body, never raise.

    The shared failure rule (:func:`tpcflow.serve.batching.run_isolated`): a handler that raises,
    or returns the wrong number of replies, is called again on each request alone.
    """
    return run_isolated(handler, bodies)


class Batcher:
    """Run ``handler`` on batches of jobs in a background thread.

    Parameters
    ----------
    handler : callable
        ``handler(bodies) -> replies``, one reply (list of frames) or Exception per body.
    deliver : callable
        ``deliver(job, reply_or_exception)``, called from the batch thread.
    max_batch : int
        Largest batch [requests].
    max_wait : float
        Longest wait for a batch to fill after its first request [s].
    """

    def __init__(self, handler: BatchHandler, deliver, *, max_batch: int = 1, max_wait: float = 0.0):
        self.max_batch, self.max_wait = check_knobs(max_batch, max_wait)
        self.handler = handler
        self.deliver = deliver
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.batches = 0
        self.batch_sizes: Counter = Counter()  # batch size -> number of batches
        self._thread = threading.Thread(target=self._loop, name="mdp-batcher", daemon=True)
        self._thread.start()

    def put(self, job: Job) -> None:
        """Queue a job (thread-safe)."""
        self.jobs.put(job)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread after the batch in progress."""
        self.jobs.put(None)
        self._thread.join(timeout)

    def _gather(self) -> list | None:
        first = self.jobs.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                job = self.jobs.get(timeout=left) if left > 0 else self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self.jobs.put(None)
                break
            batch.append(job)
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._gather()
            if batch is None:
                return
            replies = run_batch(self.handler, [j.body for j in batch])
            self.batches += 1
            self.batch_sizes[len(batch)] += 1
            for job, reply in zip(batch, replies):
                self.deliver(job, reply)


_WAKER_IDS = itertools.count()


class Waker:
    """Wake a ZeroMQ poll loop from other threads: poll :attr:`rx`, call :meth:`wake` (thread-safe).

    Parameters
    ----------
    context : zmq.Context
    name : str
        Readable part of the ``inproc://`` address (a process-wide counter makes it unique).
    """

    def __init__(self, context: zmq.Context, name: str):
        address = f"inproc://tpcflow-wake-{name}-{next(_WAKER_IDS)}"
        self.rx = context.socket(zmq.PULL)
        self.rx.bind(address)
        self._tx = context.socket(zmq.PUSH)
        self._tx.connect(address)
        self._lock = threading.Lock()

    def wake(self) -> None:
        """Make :attr:`rx` readable (a no-op while wake-ups are pending)."""
        with self._lock:
            try:
                self._tx.send(b"", zmq.NOBLOCK)
            except zmq.Again:
                pass

    def drain(self) -> None:
        """Consume the pending wake-ups (from the polling thread)."""
        while True:
            try:
                self.rx.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def close(self) -> None:
        self.rx.close(linger=0)
        self._tx.close(linger=0)
