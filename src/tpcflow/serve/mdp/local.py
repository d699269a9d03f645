"""Workers in the broker's own process: requests reach them by a function call, not a socket.

On a GPU node the broker and the workers usually share the machine (ublarcvserver's set-up). A
worker added with :meth:`Broker.add_local_worker <tpcflow.serve.mdp.broker.Broker.add_local_worker>`
is registered like any other (MMI, statistics, LRU dispatch, fair queues), but the broker hands
it each request directly: no loopback round trip to a worker process, no copy of the payload. An
``inline`` handler runs in the broker thread itself (for handlers of well under a millisecond);
otherwise a :class:`~tpcflow.serve.mdp.batching.Batcher` thread runs it with dynamic batching and
hands the replies back through the broker's completion queue plus a wake-up call.

Local workers need no heartbeats (they cannot lose their connection) and no CurveZMQ keys (they
are not on the network).
"""

from __future__ import annotations

from collections import deque

from tpcflow.serve.mdp.batching import Batcher, Job, run_batch

__all__ = ["LOCAL_PREFIX", "LocalWorker"]

#: Identity prefix of local worker slots. ZeroMQ peers cannot have it: identities starting with
#: a zero byte are reserved for the 5-byte ones ZeroMQ generates itself.
LOCAL_PREFIX = b"\x00local/"


class LocalWorker:
    """A service handler living in the broker process, with ``slots`` requests in progress at once.

    Parameters
    ----------
    service : bytes
        Service name.
    handler : callable
        Batch handler ``handler(bodies) -> replies`` (see :class:`~tpcflow.serve.mdp.worker.Worker`).
    done : collections.deque
        Where ``(identity, reply or Exception)`` pairs are appended when a request completes.
    notify : callable
        Called (from the batch thread) after appending to ``done``, to wake the broker.
    slots, max_batch, max_wait, inline
        As for :class:`~tpcflow.serve.mdp.worker.Worker`.
    """

    def __init__(self, service: bytes, handler, done: deque, notify, *, slots: int = 1, max_batch: int = 1,
                 max_wait: float = 0.0, inline: bool = False):
        if slots < 1:
            raise ValueError(f"slots must be >= 1, but got slots={slots}")
        self.service = service
        self.handler = handler
        self.identities = [LOCAL_PREFIX + service + b"/%d" % k for k in range(slots)]
        self._slot = {ident: k for k, ident in enumerate(self.identities)}
        self._done = done
        self._notify = notify
        self.batcher = None if inline else Batcher(handler, self._deliver, max_batch=max_batch, max_wait=max_wait)
        self.served = 0

    def submit(self, identity: bytes, client: bytes, rid: int | None, body: list) -> None:
        """Start one request on slot ``identity``; its reply is appended to ``done``."""
        if self.batcher is None:
            self._done.append((identity, run_batch(self.handler, [body])[0]))
            self.served += 1
        else:
            self.batcher.put(Job(self._slot[identity], 0, client, rid, body))

    def _deliver(self, job: Job, reply) -> None:
        self._done.append((self.identities[job.slot], reply))
        self.served += 1
        self._notify()

    def close(self) -> None:
        """Stop the batch thread after the batch in progress."""
        if self.batcher is not None:
            self.batcher.close()
