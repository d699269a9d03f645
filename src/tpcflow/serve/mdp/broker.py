"""MDP/0.2 broker: named services, LRU dispatch, heartbeats, MMI, deadlines and re-dispatch.

Source: ZeroMQ RFC 18 (MDP/0.2), RFC 8 (MMI); wire dialect of majortomo 0.2.0 (see
:mod:`tpcflow.serve.mdp.protocol`). Improvements over majortomo: MMI service discovery and
statistics, unknown services fail fast (or after ``unknown_service_timeout``), a request whose
worker dies (heartbeat expired, or DISCONNECT) is re-dispatched, and body frames are forwarded
without copying. Workers can also live in the broker's process (:meth:`Broker.add_local_worker`,
``tpcflow worker --bind``): they are handed requests by a function call, with no loopback hop.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import deque

import zmq

from tpcflow.errors import ServiceError
from tpcflow.serve.mdp import protocol as P
from tpcflow.serve.mdp.batching import Waker
from tpcflow.serve.mdp.broker_state import BrokerState
from tpcflow.serve.mdp.lifecycle import ThreadLoop
from tpcflow.serve.mdp.local import LocalWorker
from tpcflow.serve.mdp.services import ServiceState, WorkerState

__all__ = ["Broker"]


class Broker(BrokerState, ThreadLoop):
    """A Majordomo broker on one ROUTER socket (clients and workers share it).

    Parameters
    ----------
    bind : str
        ZeroMQ endpoint, e.g. ``"tcp://127.0.0.1:5555"``; port ``0`` or ``*`` picks a free port
        (see :attr:`endpoint`).
    heartbeat_interval : float
        Seconds between heartbeats sent to each worker [s].
    heartbeat_liveness : int
        An idle worker silent for ``liveness * interval`` seconds is dead.
    busy_worker_timeout : float
        A busy worker silent for this long [s] after its request was dispatched (or after its
        last message) is dead, and its request is re-dispatched.  majortomo-style workers send
        no heartbeats while busy; the default of 120 s lets them run a 60 s request with a 2x
        margin and still re-dispatches a crashed worker's request within two minutes
        (ublarcvserver's broker allowed 900 s).  A worker once seen heartbeating while busy
        (tpcflow's workers do) is held to the heartbeat liveness even when busy.
    unknown_service_timeout : float
        A request to a service with no worker waits this long [s] for one to register, then gets a
        404 error reply; ``0`` answers at once.
    max_attempts : int
        A request whose worker died this many times gets a 500 error reply instead.
    context : zmq.Context, optional
    curve : tpcflow.serve.mdp.curve.CurveServer, optional
        CurveZMQ keys and allow-lists; without it the socket is plain TCP.

    Attributes
    ----------
    endpoint : str
        The bound endpoint, with the port resolved.

    Notes
    -----
    Call :meth:`run` (blocking, until :meth:`stop`) or :meth:`start` (a daemon thread). The
    state machine, :meth:`handle` (one message) and :meth:`tick` (timers), both taking ``now``,
    is :class:`~tpcflow.serve.mdp.broker_state.BrokerState`.
    """

    thread_name = "mdp-broker"

    def __init__(
        self,
        bind: str = "tcp://127.0.0.1:5555",
        *,
        heartbeat_interval: float = 2.5,
        heartbeat_liveness: int = 4,
        busy_worker_timeout: float = 120.0,
        unknown_service_timeout: float = 0.0,
        max_attempts: int = 3,
        context: zmq.Context | None = None,
        curve=None,
    ):
        BrokerState.__init__(self, heartbeat_interval=heartbeat_interval, heartbeat_liveness=heartbeat_liveness,
                             busy_worker_timeout=busy_worker_timeout, unknown_service_timeout=unknown_service_timeout,
                             max_attempts=max_attempts, curve=curve)
        ThreadLoop.__init__(self)
        self._ctx = context or zmq.Context.instance()
        self._running = False
        # NOTE [socket thread]: the socket is created and bound here, so that ``endpoint`` (with an
        # ephemeral port resolved) is known at once; from then on only the thread running run()
        # touches it.  ZeroMQ allows moving a socket to another thread across a full memory
        # barrier, and Thread.start() is one.  Tests that drive handle()/tick() by hand use it from
        # the constructing thread and never call run().
        self.socket = self._ctx.socket(zmq.ROUTER)
        self.socket.linger = 0
        self.socket.sndhwm = 0  # never drop a reply silently; clients read continuously
        self.socket.rcvhwm = 0
        if curve is not None:
            curve.apply(self.socket)
        P.check_endpoint(bind, "bind")
        if bind.endswith(":0"):
            bind = bind[:-2] + ":*"
        try:
            self.socket.bind(bind)
        except zmq.ZMQError as err:
            self.socket.close(0)
            raise ServiceError(f"cannot bind the broker to {bind}: {err} (another process on that port?)") from None
        self.endpoint: str = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._locals: list[LocalWorker] = []
        self._local_done: deque = deque()  # (identity, reply) of requests local workers completed
        self._waker = Waker(self._ctx, "broker")

    def add_local_worker(self, service: str, handler, *, slots: int | None = None, max_batch: int = 1,
                         max_wait: float = 0.0, inline: bool = False) -> LocalWorker:
        """Serve ``service`` from this process: requests are handed to ``handler`` by a function call.

        Call before :meth:`run` / :meth:`start`. The worker is registered like a remote one (MMI,
        statistics, LRU dispatch among its ``slots`` and any remote workers of the same service),
        never expires, and needs no CurveZMQ keys.

        Parameters
        ----------
        service : str
            Service name (printable ASCII).
        handler : callable
            Batch handler ``handler(bodies) -> replies``: one reply (list of frames) or Exception
            per request body (list of ``zmq.Frame``), as for :class:`~tpcflow.serve.mdp.worker.Worker`.
        slots : int, optional
            Requests in progress at once (default ``max_batch``).
        max_batch, max_wait
            Dynamic batching limits [requests], [s]; the handler runs in its own thread.
        inline : bool
            Run the handler in the broker thread (lowest latency; only for handlers of well under a
            millisecond, since the broker serves nobody while it runs).

        Returns
        -------
        LocalWorker

        Raises
        ------
        ProtocolError
            If ``service`` is not 1-255 printable ASCII characters.
        RuntimeError
            If the broker is already running.
        """
        if self._running:
            raise RuntimeError("add_local_worker: the broker is running; add local workers before run() / start()")
        name = P.validate_service_name(service)
        lw = LocalWorker(name, handler, self._local_done, self._waker.wake, slots=int(slots or max_batch),
                         max_batch=max_batch, max_wait=max_wait, inline=inline)
        self._locals.append(lw)
        svc = self.services.get(name)
        if svc is None:
            svc = self.services[name] = ServiceState(name)
        inf = float("inf")
        for identity in lw.identities:
            w = WorkerState(identity, name, inf, inf, local=lw)
            self.workers[identity] = svc.workers[identity] = svc.idle[identity] = w
        return lw

    # ------------------------------------------------------------------ socket loop
    def run(self, *, freeze_gc: bool = False) -> None:
        """Serve until :meth:`stop`; every message is validated, none can crash the loop.

        With ``freeze_gc`` (a dedicated broker process, as ``tpcflow broker`` runs it), the objects
        alive at start-up are frozen out of Python's cyclic collector (``gc.freeze``), which
        removes multi-millisecond full collections from the latency tail.
        """
        self._running = True
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        poller.register(self._waker.rx, zmq.POLLIN)
        if freeze_gc:
            gc.freeze()
        next_tick = 0.0
        last = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                stall = now - last - 2 * self.heartbeat_interval
                if stall > 0:  # this loop itself did not run (GIL, swap, SIGSTOP): nobody was heard
                    for w in self.workers.values():
                        w.expires_at += stall
                last = now
                if now >= next_tick:
                    self.tick(now)
                    next_tick = now + min(self.heartbeat_interval, 0.05 + self.heartbeat_interval / 4)
                timeout = 0.0 if self._local_done else max(0.0, min(next_tick - now, 0.1))
                events = dict(poller.poll(timeout * 1000))
                if self._waker.rx in events:
                    self._waker.drain()
                if self.socket in events:
                    for _ in range(1000):  # drain a burst, then look at the timers again
                        try:
                            frames = P.recv_frames(self.socket, P.NOBLOCK)
                        except zmq.Again:
                            break
                        self.handle(frames, time.monotonic())
                        if self._local_done:  # an inline local worker answered: reply at once
                            self._finish_local(time.monotonic())
                if self._local_done:
                    self._finish_local(time.monotonic())
        finally:
            for lw in self._locals:
                lw.close()
            self._waker.close()
            self.socket.close(linger=0)
            if self._curve is not None:
                self._curve.stop()

    def start(self, *, freeze_gc: bool = False) -> threading.Thread:
        """Run :meth:`run` in a daemon thread and return it (stop with :meth:`stop`)."""
        self._running = True
        return ThreadLoop.start(self, freeze_gc=freeze_gc)

    def _send(self, frames: list) -> None:
        P.send_frames(self.socket, frames)

    def _finish_local(self, now: float) -> None:
        """Reply for the requests the local workers completed (inline ones complete during dispatch)."""
        done = self._local_done
        while done:
            identity, reply = done.popleft()
            w = self.workers.get(identity)
            if w is None or w.request is None:
                continue
            if isinstance(reply, BaseException):
                reply = P.error_body(500, f"service {w.service.decode()!r}: {type(reply).__name__}: {reply}")
            self._complete(w, list(reply), now)
