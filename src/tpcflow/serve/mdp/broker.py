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
import logging
import threading
import time
from collections import Counter, deque

import zmq

from tpcflow.errors import ProtocolError
from tpcflow.serve.mdp import protocol as P
from tpcflow.serve.mdp.batching import Waker
from tpcflow.serve.mdp.local import LOCAL_PREFIX, LocalWorker
from tpcflow.serve.mdp.services import QueuedRequest, ServiceState, WorkerState, broker_stats, mmi_reply

__all__ = ["Broker"]

log = logging.getLogger(__name__)


class Broker:
    """A Majordomo broker on one ROUTER socket (clients and workers share it).

    Parameters
    ----------
    bind : str
        ZeroMQ endpoint, e.g. ``"tcp://127.0.0.1:5555"``; port ``0`` or ``*`` picks a free port
        (see :attr:`endpoint`).
    heartbeat_interval : float
        Seconds between heartbeats sent to each worker [s].
    heartbeat_liveness : int
        A worker silent for ``liveness * interval`` seconds is dead; its request is re-dispatched.
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
    state machine is :meth:`handle` (one message) and :meth:`tick` (timers), both taking ``now``.
    """

    def __init__(
        self,
        bind: str = "tcp://127.0.0.1:5555",
        *,
        heartbeat_interval: float = 2.5,
        heartbeat_liveness: int = 4,
        unknown_service_timeout: float = 0.0,
        max_attempts: int = 3,
        context: zmq.Context | None = None,
        curve=None,
    ):
        if heartbeat_interval <= 0:
            raise ValueError(f"heartbeat_interval must be > 0, but got {heartbeat_interval}")
        if heartbeat_liveness < 1:
            raise ValueError(f"heartbeat_liveness must be >= 1, but got {heartbeat_liveness}")
        self.heartbeat_interval = float(heartbeat_interval)
        self.heartbeat_expiry = float(heartbeat_interval) * int(heartbeat_liveness)
        self.unknown_service_timeout = float(unknown_service_timeout)
        self.max_attempts = int(max_attempts)
        self.services: dict[bytes, ServiceState] = {}
        self.workers: dict[bytes, WorkerState] = {}
        self.counters: Counter = Counter()
        self._curve = curve
        self._ctx = context or zmq.Context.instance()
        self._stop = threading.Event()
        self._running = False
        self._thread: threading.Thread | None = None
        self.socket = self._ctx.socket(zmq.ROUTER)
        self.socket.linger = 0
        self.socket.sndhwm = 0  # never drop a reply silently; clients read continuously
        self.socket.rcvhwm = 0
        if curve is not None:
            curve.apply(self.socket)
        if bind.endswith(":0"):
            bind = bind[:-2] + ":*"
        self.socket.bind(bind)
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
        """Run :meth:`run` in a daemon thread and return it."""
        self._running = True
        self._thread = threading.Thread(target=self.run, kwargs={"freeze_gc": freeze_gc}, name="mdp-broker",
                                        daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, join: bool = True) -> None:
        """Stop the loop (thread-safe); with ``join``, wait for a thread started by :meth:`start`."""
        self._stop.set()
        if join and self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)

    # ------------------------------------------------------------------ state machine
    def handle(self, frames: list, now: float) -> None:
        """Process one multipart message; malformed ones are counted, logged and dropped."""
        try:
            msg = P.parse_inbound(frames)
        except ProtocolError as err:
            self._malformed(frames, str(err))
            return
        except Exception as err:  # defensive: nothing a peer sends may stop the broker
            self._malformed(frames, f"{type(err).__name__}: {err}")
            return
        self.counters["messages"] += 1
        try:
            if msg.header == P.CLIENT_HEADER:
                self._on_request(msg, frames, now)
            else:
                self._on_worker(msg, frames, now)
        except Exception:  # a bug must not take the broker down; count it and carry on
            self.counters["internal_errors"] += 1
            log.exception("error while handling a %s message", P.COMMAND_NAMES.get(msg.command, "?"))

    def tick(self, now: float) -> None:
        """Expire silent workers (re-dispatching their requests), send heartbeats, expire orphans."""
        for w in [w for w in self.workers.values() if now >= w.expires_at]:
            log.info("worker %s of service %r expired", w.identity.hex(), w.service.decode())
            self.counters["workers_expired"] += 1
            self._send_worker(w.identity, P.DISCONNECT)
            self._remove_worker(w, now)
        for w in self.workers.values():
            if now >= w.heartbeat_at:
                self._send_worker(w.identity, P.HEARTBEAT)
                w.heartbeat_at = now + self.heartbeat_interval
        for svc in list(self.services.values()):
            if svc.depth and not svc.workers:
                self._expire_orphans(svc, now)

    # ------------------------------------------------------------------ clients
    def _on_request(self, msg: P.Inbound, frames: list, now: float) -> None:
        rid, body = P.split_rid(msg.body)
        if msg.service.startswith(b"mmi."):
            self._reply(msg.sender, rid, mmi_reply(self.services, self.counters, msg.service, body),
                        rfc=(msg.service if msg.rfc else None))
            return
        svc = self.services.get(msg.service)
        if svc is None:
            svc = self.services[msg.service] = ServiceState(msg.service)
        svc.requests += 1
        req = QueuedRequest(msg.sender, rid, body, msg.service, now, rfc=msg.rfc)
        svc.push(req)
        if not svc.workers:
            self._expire_orphans(svc, now)
        self._dispatch(svc, now)

    def _expire_orphans(self, svc: ServiceState, now: float) -> None:
        for q in svc.queues.values():
            for r in q:
                if r.orphan_since is None:
                    r.orphan_since = now
        late = svc.remove_if(lambda r: now - r.orphan_since >= self.unknown_service_timeout)
        for r in late:
            svc.expired += 1
            svc.errors += 1
            known = sorted(s.decode() for s, st in self.services.items() if st.workers)
            text = f"service {r.service.decode()!r}: no worker registered"
            if self.unknown_service_timeout > 0:
                text += f" within {self.unknown_service_timeout:g} s"
            text += f"; services with workers: {known}"
            self._reply(r.client, r.rid, P.error_body(404, text), rfc=r.service if r.rfc else None)
        if not svc.depth and not svc.workers and not svc.served:
            del self.services[svc.name]  # forget names that never had a worker

    # ------------------------------------------------------------------ workers
    def _on_worker(self, msg: P.Inbound, frames: list, now: float) -> None:
        w = self.workers.get(msg.sender)
        cmd = msg.command
        if cmd == P.READY:
            if w is not None or msg.service.startswith(b"mmi."):
                self._violation(msg.sender, w, now, "READY sent twice or for a reserved mmi.* name")
                return
            user = self._user_id(frames[-1])
            if self._curve is not None and not self._curve.may_serve(user):
                self.counters["refused_workers"] += 1
                log.warning("refused READY for %r: key %s is not an allowed worker key", msg.service, user)
                self._send_worker(msg.sender, P.DISCONNECT, msg.rfc)
                return
            w = WorkerState(msg.sender, msg.service, now + self.heartbeat_expiry, now + self.heartbeat_interval, user,
                            rfc=msg.rfc)
            self.workers[msg.sender] = w
            svc = self.services.get(msg.service)
            if svc is None:
                svc = self.services[msg.service] = ServiceState(msg.service)
            svc.workers[msg.sender] = w
            svc.idle[msg.sender] = w
            log.info("worker %s registered for service %r", msg.sender.hex(), msg.service.decode())
            self._dispatch(svc, now)
            return
        if w is None:  # unknown peer (e.g. we restarted): tell it to reconnect and register again
            if cmd != P.DISCONNECT:
                self.counters["unknown_worker"] += 1
                self._send_worker(msg.sender, P.DISCONNECT, msg.rfc)
            return
        w.expires_at = now + self.heartbeat_expiry
        if cmd == P.HEARTBEAT:
            return
        if cmd == P.DISCONNECT:
            self._remove_worker(w, now)
            return
        req = w.request
        if req is None or req.client != msg.client:
            self._violation(msg.sender, w, now, "reply without a matching request")
            return
        if cmd == P.PARTIAL:
            self._reply(req.client, req.rid, msg.body, P.PARTIAL, rfc=req.service if req.rfc else None)
            return
        self._complete(w, msg.body, now)  # FINAL

    def _complete(self, w: WorkerState, body: list, now: float) -> None:
        """Send the FINAL reply of ``w``'s request, make ``w`` idle and dispatch the next request."""
        svc = self.services[w.service]
        req = w.request
        if P.parse_error(body) is not None:
            svc.errors += 1
        svc.served += 1
        self._reply(req.client, req.rid, body, rfc=req.service if req.rfc else None)
        w.request = None
        svc.idle[w.identity] = w
        self._dispatch(svc, now)

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

    def _dispatch(self, svc: ServiceState, now: float) -> None:
        while svc.idle and svc.depth:
            req = svc.pop()
            _, w = svc.idle.popitem(last=False)  # least recently used
            req.attempts += 1
            w.request = req
            if w.local is not None:
                w.local.submit(w.identity, req.client, req.rid, req.body)
                continue
            w.heartbeat_at = now + self.heartbeat_interval
            head = [w.identity, P.WORKER_HEADER] if w.rfc else [w.identity, b"", P.WORKER_HEADER]
            P.send_frames(self.socket, [*head, P.REQUEST, req.client, b"", *req.body])

    def _remove_worker(self, w: WorkerState, now: float) -> None:
        self.workers.pop(w.identity, None)
        svc = self.services.get(w.service)
        if svc is None:
            return
        svc.workers.pop(w.identity, None)
        svc.idle.pop(w.identity, None)
        req, w.request = w.request, None
        if req is not None:
            if req.attempts >= self.max_attempts:
                svc.errors += 1
                text = f"service {svc.name.decode()!r}: {req.attempts} workers died while processing the request"
                self._reply(req.client, req.rid, P.error_body(500, text), rfc=req.service if req.rfc else None)
            else:
                svc.redispatched += 1
                svc.push(req, front=True)
                self._dispatch(svc, now)

    def _violation(self, identity: bytes, w: WorkerState | None, now: float, why: str) -> None:
        self.counters["worker_violations"] += 1
        log.warning("worker %s: %s; sending DISCONNECT", identity.hex(), why)
        self._send_worker(identity, P.DISCONNECT)
        if w is not None:
            self._remove_worker(w, now)

    # ------------------------------------------------------------------ helpers
    def _send_worker(self, identity: bytes, command: bytes, rfc: bool | None = None) -> None:
        if identity.startswith(LOCAL_PREFIX):
            return  # local workers have no socket (and never expire)
        if rfc is None:
            w = self.workers.get(identity)
            rfc = w is not None and w.rfc
        P.send_frames(self.socket, [identity, P.WORKER_HEADER, command] if rfc else
                      [identity, b"", P.WORKER_HEADER, command])

    def _reply(self, client: bytes, rid: int | None, body: list, command: bytes = P.FINAL,
               rfc: bytes | None = None) -> None:
        """Send a reply; ``rfc`` (the service name) selects the RFC 18 text framing."""
        if rfc is not None:
            head = [client, P.CLIENT_HEADER, P.RFC_FINAL if command == P.FINAL else P.RFC_PARTIAL, rfc]
        else:
            head = [client, b"", P.CLIENT_HEADER, command]
        if rid is not None:
            head.append(P.pack_rid(rid))
        P.send_frames(self.socket, head + list(body))

    @staticmethod
    def _user_id(frame) -> str | None:
        try:
            return frame.get("User-Id")
        except Exception:  # plain bytes, or no ZAP handler
            return None

    def _malformed(self, frames: list, why: str) -> None:
        n = self.counters["malformed"] = self.counters["malformed"] + 1
        if n <= 10 or n % 1000 == 0:
            log.warning("dropped malformed message #%d (%d frames): %s", n, len(frames), why)

    def stats(self) -> dict:
        """Return per-service statistics and broker counters (the ``mmi.stats`` reply)."""
        return broker_stats(self.services, self.counters)
