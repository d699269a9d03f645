"""MDP/0.2 broker: named services, LRU dispatch, heartbeats, MMI, deadlines and re-dispatch.

Source: ZeroMQ RFC 18 (MDP/0.2), RFC 8 (MMI); wire dialect of majortomo 0.2.0 (see
:mod:`tpcflow.serve.mdp.protocol`). Improvements over majortomo: MMI service discovery and
statistics, unknown services fail fast (or after ``unknown_service_timeout``), a request whose
worker dies (heartbeat expired, or DISCONNECT) is re-dispatched, and body frames are forwarded
without copying.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from collections import Counter

import zmq

from tpcflow.errors import ProtocolError
from tpcflow.serve.mdp import protocol as P
from tpcflow.serve.mdp.services import QueuedRequest, ServiceState, WorkerState

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
    local_endpoint : str
        An ``inproc://`` endpoint of the same socket. A :class:`~tpcflow.serve.mdp.worker.Worker`
        in this process, built with ``context=broker.context``, connects here: its requests and
        replies are handed over in memory, without crossing a TCP socket or copying the payload
        (``tpcflow worker --bind``). CURVE does not apply to in-process peers.

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
        self.local_endpoint = f"inproc://tpcflow-mdp-broker-{id(self):x}"
        self.socket.bind(self.local_endpoint)

    @property
    def context(self) -> zmq.Context:
        """The ZeroMQ context of the broker socket (in-process workers must share it)."""
        return self._ctx

    # ------------------------------------------------------------------ socket loop
    def run(self, *, freeze_gc: bool = False) -> None:
        """Serve until :meth:`stop`; every message is validated, none can crash the loop.

        With ``freeze_gc`` (a dedicated broker process, as ``tpcflow broker`` runs it), the objects
        alive at start-up are frozen out of Python's cyclic collector (``gc.freeze``), which
        removes multi-millisecond full collections from the latency tail.
        """
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
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
                timeout = max(0.0, min(next_tick - now, 0.1))
                if not poller.poll(timeout * 1000):
                    continue
                for _ in range(1000):  # drain a burst, then look at the timers again
                    try:
                        frames = P.recv_frames(self.socket, P.NOBLOCK)
                    except zmq.Again:
                        break
                    self.handle(frames, time.monotonic())
        finally:
            self.socket.close(linger=0)
            if self._curve is not None:
                self._curve.stop()

    def start(self, *, freeze_gc: bool = False) -> threading.Thread:
        """Run :meth:`run` in a daemon thread and return it."""
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
            self._reply(msg.sender, rid, self._mmi(msg.service, body), rfc=(msg.service if msg.rfc else None))
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

    def _mmi(self, service: bytes, body: list) -> list:
        if service == b"mmi.service":
            name = P.frame_bytes(body[0]) if body else b""
            svc = self.services.get(name)
            return [b"200" if svc is not None and svc.workers else b"404"]
        if service == b"mmi.services":
            names = sorted(s.decode() for s, st in self.services.items() if st.workers)
            return [b"200", json.dumps(names).encode()]
        if service == b"mmi.stats":
            want = {P.frame_bytes(f) for f in body}
            stats = {s.decode(): st.stats() for s, st in self.services.items() if not want or s in want}
            out = {"services": stats, "broker": dict(self.counters)}
            return [b"200", json.dumps(out, sort_keys=True).encode()]
        return [b"501"]

    # ------------------------------------------------------------------ workers
    def _on_worker(self, msg: P.Inbound, frames: list, now: float) -> None:
        w = self.workers.get(msg.sender)
        cmd = msg.command
        if cmd == P.READY:
            if w is not None or msg.service.startswith(b"mmi."):
                self._violation(msg.sender, w, now, "READY sent twice or for a reserved mmi.* name")
                return
            user = self._user_id(frames[-1])
            if self._curve is not None and not self._in_process(frames[-1]) and not self._curve.may_serve(user):
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
        svc = self.services[w.service]
        if cmd == P.PARTIAL:
            self._reply(req.client, req.rid, msg.body, P.PARTIAL, rfc=req.service if req.rfc else None)
            return
        # FINAL
        if P.parse_error(msg.body) is not None:
            svc.errors += 1
        svc.served += 1
        self._reply(req.client, req.rid, msg.body, rfc=req.service if req.rfc else None)
        w.request = None
        svc.idle[w.identity] = w
        self._dispatch(svc, now)

    def _dispatch(self, svc: ServiceState, now: float) -> None:
        while svc.idle and svc.depth:
            req = svc.pop()
            _, w = svc.idle.popitem(last=False)  # least recently used
            req.attempts += 1
            w.request = req
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

    @staticmethod
    def _in_process(frame) -> bool:
        """Whether ``frame`` came over ``inproc://`` (:attr:`local_endpoint`), where ZMTP metadata is absent."""
        try:
            frame.get("Socket-Type")
        except zmq.ZMQError:
            return True
        except Exception:  # plain bytes (tests driving handle()): not known to be local
            return False
        return False

    def _malformed(self, frames: list, why: str) -> None:
        n = self.counters["malformed"] = self.counters["malformed"] + 1
        if n <= 10 or n % 1000 == 0:
            log.warning("dropped malformed message #%d (%d frames): %s", n, len(frames), why)

    def stats(self) -> dict:
        """Return per-service statistics and broker counters (the ``mmi.stats`` reply)."""
        return {
            "services": {s.decode(): st.stats() for s, st in self.services.items()},
            "broker": dict(self.counters),
        }
