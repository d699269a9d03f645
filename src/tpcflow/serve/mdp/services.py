"""Broker bookkeeping: services, workers and queued requests (no sockets, no clock).

Time is always passed in (``now``, seconds) so the policies are testable without sleeping.
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from tpcflow.serve.mdp.protocol import frame_bytes

__all__ = ["QueuedRequest", "ServiceState", "WorkerState", "broker_stats", "mmi_reply"]


@dataclass
class QueuedRequest:
    """A client request the broker holds until a worker replies FINAL.

    Attributes
    ----------
    client : bytes
        Client identity (ROUTER address).
    rid : int or None
        Client request id (tpcflow extension), echoed in front of the reply.
    body : list
        Request body frames (zero-copy ``zmq.Frame`` objects where received so).
    service : bytes
    attempts : int
        Number of times it was dispatched to a worker, less the free retries.
    free_retries : int
        Dispatches to a worker already silent (no message for 1.5 heartbeat intervals) that then
        died: not counted as attempts, since that worker was most likely dead before the request
        reached it (at most ``max_attempts`` of them).
    queued_at : float
    orphan_since : float or None
        Since when the request waits on a service with no worker (unknown-service deadline).
    """

    client: bytes
    rid: int | None
    body: list
    service: bytes
    queued_at: float
    attempts: int = 0
    free_retries: int = 0
    orphan_since: float | None = None
    rfc: bool = False


@dataclass
class WorkerState:
    """A registered worker (one MDP DEALER connection)."""

    identity: bytes
    service: bytes
    expires_at: float
    heartbeat_at: float
    user_id: str | None = None
    request: QueuedRequest | None = None
    busy_until: float = 0.0  # while busy, not expired before this (its last message + busy_worker_timeout)
    beats_when_busy: bool = False  # seen sending HEARTBEAT while busy: held to the idle liveness
    rfc: bool = False
    local: object | None = None  # the LocalWorker of an in-process slot (no socket, no heartbeats)
    silent_at_dispatch: bool = False  # its request came after 1.5 heartbeat intervals without a message

    @property
    def busy(self) -> bool:
        return self.request is not None


@dataclass
class ServiceState:
    """One named service: its workers (idle ones in LRU order) and its request queue.

    The queue is fair between clients: one FIFO per client, served round robin, so one client with
    thousands of requests in flight cannot starve another.
    """

    name: bytes
    workers: dict = field(default_factory=dict)  # identity -> WorkerState
    idle: OrderedDict = field(default_factory=OrderedDict)  # identity -> WorkerState, LRU first
    queues: OrderedDict = field(default_factory=OrderedDict)  # client -> deque[QueuedRequest]
    depth: int = 0
    requests: int = 0
    served: int = 0
    errors: int = 0
    redispatched: int = 0
    expired: int = 0

    def push(self, req: QueuedRequest, *, front: bool = False) -> None:
        """Queue ``req`` (at the head of its client's queue with ``front``, for re-dispatch)."""
        q = self.queues.get(req.client)
        if q is None:
            q = self.queues[req.client] = deque()
            if front:
                self.queues.move_to_end(req.client, last=False)
        if front:
            q.appendleft(req)
        else:
            q.append(req)
        self.depth += 1

    def pop(self) -> QueuedRequest | None:
        """Pop the next request, round robin over clients; None if the queue is empty."""
        if not self.queues:
            return None
        client, q = next(iter(self.queues.items()))
        req = q.popleft()
        if q:
            self.queues.move_to_end(client)
        else:
            del self.queues[client]
        self.depth -= 1
        return req

    def drain(self):
        """Remove and yield every queued request."""
        for q in self.queues.values():
            yield from q
        self.queues.clear()
        self.depth = 0

    def remove_if(self, pred) -> list[QueuedRequest]:
        """Remove and return the queued requests for which ``pred(req)`` is true."""
        removed = []
        for client in list(self.queues):
            q = self.queues[client]
            keep = deque(r for r in q if not pred(r))
            removed.extend(r for r in q if pred(r))
            if keep:
                self.queues[client] = keep
            else:
                del self.queues[client]
        self.depth -= len(removed)
        return removed

    def stats(self) -> dict:
        """Return the MMI statistics of this service (JSON-serialisable)."""
        return {
            "queue": self.depth,
            "workers": len(self.workers),
            "idle": len(self.idle),
            "busy": len(self.workers) - len(self.idle),
            "requests": self.requests,
            "served": self.served,
            "errors": self.errors,
            "redispatched": self.redispatched,
            "expired": self.expired,
        }


def broker_stats(services: dict, counters: dict, want: set | None = None) -> dict:
    """Per-service statistics (of the names in ``want``, or all) and the broker's counters."""
    return {
        "services": {s.decode(): st.stats() for s, st in services.items() if not want or s in want},
        "broker": dict(counters),
    }


def mmi_reply(services: dict, counters: dict, service: bytes, body: list) -> list[bytes]:
    """Answer a request to the broker's ``mmi.*`` services (ZeroMQ RFC 8, plus two of our own).

    ``mmi.service`` answers ``200`` if ``body[0]`` names a service with a worker, else ``404``;
    ``mmi.services`` answers ``200`` and a JSON list of such names; ``mmi.stats`` answers ``200``
    and :func:`broker_stats` as JSON (of the services named in ``body``, or all); any other
    ``mmi.*`` name answers ``501``.
    """
    if service == b"mmi.service":
        svc = services.get(frame_bytes(body[0]) if body else b"")
        return [b"200" if svc is not None and svc.workers else b"404"]
    if service == b"mmi.services":
        return [b"200", json.dumps(sorted(s.decode() for s, st in services.items() if st.workers)).encode()]
    if service == b"mmi.stats":
        stats = broker_stats(services, counters, {frame_bytes(f) for f in body})
        return [b"200", json.dumps(stats, sort_keys=True).encode()]
    return [b"501"]
