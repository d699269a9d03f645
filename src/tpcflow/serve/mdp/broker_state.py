"""The MDP/0.2 broker's state machine: services, workers, LRU dispatch, MMI, expiry, re-dispatch.

No socket loop and no threads: :meth:`BrokerState.handle` takes one message and
:meth:`BrokerState.tick` runs the timers, both with ``now`` passed in, so that tests drive them
with a fake clock. Messages go out through :meth:`BrokerState._send`, which the
:class:`~tpcflow.serve.mdp.broker.Broker` implements with its ROUTER socket.

Source: ZeroMQ RFC 18 (MDP/0.2), RFC 8 (MMI); wire dialect of majortomo 0.2.0 (see
:mod:`tpcflow.serve.mdp.protocol`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter

from tpcflow.errors import ProtocolError
from tpcflow.serve.mdp import protocol as P
from tpcflow.serve.mdp.local import LOCAL_PREFIX
from tpcflow.serve.mdp.services import QueuedRequest, ServiceState, WorkerState, broker_stats, mmi_reply

__all__ = ["BrokerState"]

log = logging.getLogger("tpcflow.serve.mdp.broker")


class BrokerState:
    """Broker bookkeeping and policies (see the module docstring); parameters as for :class:`Broker`.

    Raises
    ------
    ValueError
        If ``heartbeat_interval <= 0``, ``heartbeat_liveness < 1`` or ``busy_worker_timeout < 0``.
    """

    def __init__(self, *, heartbeat_interval: float = 2.5, heartbeat_liveness: int = 4,
                 busy_worker_timeout: float = 120.0, unknown_service_timeout: float = 0.0, max_attempts: int = 3,
                 curve=None):
        if heartbeat_interval <= 0:
            raise ValueError(f"heartbeat_interval must be > 0, but got {heartbeat_interval}")
        if heartbeat_liveness < 1:
            raise ValueError(f"heartbeat_liveness must be >= 1, but got {heartbeat_liveness}")
        self.heartbeat_interval = float(heartbeat_interval)
        if not busy_worker_timeout >= 0:
            raise ValueError(f"busy_worker_timeout must be >= 0, but got {busy_worker_timeout}")
        self.heartbeat_expiry = float(heartbeat_interval) * int(heartbeat_liveness)
        self.busy_worker_timeout = float(busy_worker_timeout)
        self.unknown_service_timeout = float(unknown_service_timeout)
        self.max_attempts = int(max_attempts)
        self.services: dict[bytes, ServiceState] = {}
        self.workers: dict[bytes, WorkerState] = {}
        self.counters: Counter = Counter()
        self._curve = curve
        self._refusal_logged: dict = {}  # worker key -> when its refusal was last logged

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
        # NOTE [busy workers]: majortomo's and ublarcvserver's workers send no heartbeat while they
        # process a request, so a busy worker is given busy_worker_timeout from its last message
        # (dispatch counts) before it is taken for dead; idle workers expire after heartbeat_expiry.
        # A worker seen heartbeating while busy (tpcflow's) has shown that its silence means death,
        # so it is held to heartbeat_expiry even when busy: a crash is re-dispatched in seconds.
        for w in [w for w in self.workers.values() if now >= w.expires_at and not self._busy_grace(w, now)]:
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

    @staticmethod
    def _busy_grace(w: WorkerState, now: float) -> bool:
        return w.busy and not w.beats_when_busy and now < w.busy_until

    def _send(self, frames: list) -> None:
        """Send one multipart message to a peer (``frames[0]`` is its routing identity)."""
        raise NotImplementedError("BrokerState._send: the socket owner implements it")

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
                # one warning per key a minute: a refused worker retrying must not flood the log
                if now - self._refusal_logged.get(user, -math.inf) >= 60.0:
                    self._refusal_logged[user] = now
                    log.warning("refused READY for %r: key %s is not an allowed worker key (%d refusals so far; "
                                "repeats of this key are logged once a minute)", msg.service, user,
                                self.counters["refused_workers"])
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
        w.busy_until = now + self.busy_worker_timeout
        if cmd == P.HEARTBEAT:
            w.beats_when_busy = w.beats_when_busy or w.busy
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

    def _dispatch(self, svc: ServiceState, now: float) -> None:
        while svc.idle and svc.depth:
            req = svc.pop()
            _, w = svc.idle.popitem(last=False)  # least recently used
            req.attempts += 1
            # a worker of several connections killed leaves idle-looking connections until they
            # expire: a request sent to one of them should not count as a death it caused
            last_message = w.expires_at - self.heartbeat_expiry
            w.silent_at_dispatch = w.local is None and now - last_message > 1.5 * self.heartbeat_interval
            w.request = req
            w.busy_until = now + self.busy_worker_timeout
            if w.local is not None:
                w.local.submit(w.identity, req.client, req.rid, req.body)
                continue
            w.heartbeat_at = now + self.heartbeat_interval
            head = [w.identity, P.WORKER_HEADER] if w.rfc else [w.identity, b"", P.WORKER_HEADER]
            self._send([*head, P.REQUEST, req.client, b"", *req.body])

    def _remove_worker(self, w: WorkerState, now: float) -> None:
        self.workers.pop(w.identity, None)
        svc = self.services.get(w.service)
        if svc is None:
            return
        svc.workers.pop(w.identity, None)
        svc.idle.pop(w.identity, None)
        req, w.request = w.request, None
        if req is not None:
            if w.silent_at_dispatch and req.free_retries < self.max_attempts:
                req.attempts -= 1
                req.free_retries += 1
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
        self._send([identity, P.WORKER_HEADER, command] if rfc else
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
        self._send(head + list(body))

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
