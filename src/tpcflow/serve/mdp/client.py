"""MDP/0.2 client: many requests in flight on one DEALER socket, with ids, timeouts and retries.

Each request carries a request-id frame (:func:`tpcflow.serve.mdp.protocol.pack_rid`); replies are
matched by it and duplicates (after a broker re-dispatch or a client retry) are dropped. A
request with no reply within ``timeout`` is sent again, up to ``retries`` times, then fails with
:class:`tpcflow.errors.ServiceError`. Error replies (unknown service, worker failure) raise
:class:`ServiceError` with the broker's or worker's message.

Source: ZeroMQ RFC 18 (MDP/0.2) client, RFC 8 (MMI); majortomo 0.2.0 wire dialect.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import zmq

from tpcflow.errors import ProtocolError, ServiceError, ServiceUnavailableError
from tpcflow.serve.mdp import protocol as P

__all__ = ["Client"]


@dataclass
class _Pending:
    key: object
    service: bytes
    body: list
    deadline: float
    attempts: int


class Client:
    """Send requests to services through an MDP broker.

    Parameters
    ----------
    broker : str
        Broker endpoint, e.g. ``"tcp://127.0.0.1:5555"``.
    timeout : float
        Seconds to wait for each attempt's reply [s].
    retries : int
        Extra attempts after a timeout (same request id, so a late first reply is not duplicated).
    copy : bool
        Return reply frames as ``bytes``; with False, as zero-copy ``zmq.Frame`` objects.
    context : zmq.Context, optional
    curve : tpcflow.serve.mdp.curve.CurveClient, optional
    ssh : tpcflow.serve.mdp.ssh.SSHTunnel, optional
        Reach ``broker`` (an address as seen from the ssh server) through an ssh tunnel.

    Notes
    -----
    One client is one DEALER socket: use it from one thread at a time.
    """

    def __init__(
        self,
        broker: str,
        *,
        timeout: float = 30.0,
        retries: int = 2,
        copy: bool = True,
        context: zmq.Context | None = None,
        curve=None,
        ssh=None,
    ):
        self.broker = broker
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.copy = copy
        P.check_endpoint(broker, "broker")
        self._ctx = context or zmq.Context.instance()
        self.socket = self._ctx.socket(zmq.DEALER)
        self.socket.linger = 0
        self.socket.sndhwm = 0
        self.socket.rcvhwm = 0
        if curve is not None:
            curve.apply(self.socket)
        try:
            self.socket.connect(ssh.endpoint(broker) if ssh is not None else broker)
        except BaseException:
            self.socket.close(linger=0)
            raise
        self._ids = itertools.count(int.from_bytes(os.urandom(4), "big") << 24)
        self._pending: dict[int, _Pending] = {}
        self._poller = zmq.Poller()
        self._poller.register(self.socket, zmq.POLLIN)
        self._partial: dict[int, list] = {}  # rid -> body frames of PARTIAL replies so far
        self._names: dict = {}  # service -> validated bytes
        self.duplicates = 0
        self.resent = 0

    # ------------------------------------------------------------------ low level
    def send(self, service, body: list, key=None) -> int:
        """Send a REQUEST and return its request id; ``key`` is returned with the reply."""
        svc = self._names.get(service)
        if svc is None:
            svc = self._names[service] = P.validate_service_name(service)
        rid = next(self._ids) & 0xFFFFFFFFFFFFFFFF
        self._pending[rid] = _Pending(key if key is not None else rid, svc, list(body), 0.0, 0)
        self._transmit(rid)
        return rid

    def _transmit(self, rid: int) -> None:
        p = self._pending[rid]
        p.attempts += 1
        p.deadline = time.monotonic() + self.timeout
        try:
            P.send_frames(self.socket, [b"", P.CLIENT_HEADER, P.REQUEST, p.service, P.pack_rid(rid), *p.body],
                          P.NOBLOCK)
        except zmq.Again:
            pass  # no connected broker yet: the deadline makes us try again

    @property
    def in_flight(self) -> int:
        """Number of requests sent and not yet answered."""
        return len(self._pending)

    def recv(self, timeout: float | None = None):
        """Return ``(key, reply_frames)`` for the next completed request, or None on timeout.

        Retries requests whose attempt timed out; raises :class:`ServiceError` on an error reply
        or when a request ran out of attempts.
        """
        end = None if timeout is None else time.monotonic() + timeout
        partial = self._partial
        while True:
            now = time.monotonic()
            self._check_deadlines(now)
            if not self._pending:
                return None
            wait = min(p.deadline for p in self._pending.values()) - now
            if end is not None:
                wait = min(wait, end - now)
            if wait <= 0 and end is not None and now >= end:
                return None
            if not self._poller.poll(max(0.0, wait) * 1000):
                continue
            frames = P.recv_frames(self.socket)
            if self.copy:
                frames = [f.bytes for f in frames]
            got = self._parse(frames)
            if got is None:
                continue
            command, rid, body = got
            if command == P.PARTIAL:
                partial.setdefault(rid, []).extend(body)
                continue
            body = partial.pop(rid, []) + body
            pend = self._pending.pop(rid)
            err = P.parse_error(body)
            if err is not None:
                code, text = err
                kind = ServiceUnavailableError if int(code) == 404 else ServiceError
                raise kind(f"request to service {pend.service.decode()!r} failed ({code}): {text}")
            return pend.key, body

    def _parse(self, frames: list):
        def b(f):
            return f if isinstance(f, bytes) else f.bytes

        if len(frames) < 3 or len(frames[0]) or b(frames[1]) != P.CLIENT_HEADER or b(frames[2]) not in (P.PARTIAL, P.FINAL):
            raise ProtocolError(f"reply from broker {self.broker}: malformed MDP client message ({len(frames)} frames)")
        rid, body = P.split_rid(frames[3:])
        if rid is None and len(self._pending) == 1:
            rid = next(iter(self._pending))  # a peer without request ids (e.g. majortomo worker)
        if rid not in self._pending:
            self.duplicates += 1
            return None
        return b(frames[2]), rid, body

    def _check_deadlines(self, now: float) -> None:
        for rid, p in list(self._pending.items()):
            if now < p.deadline:
                continue
            if p.attempts > self.retries:
                del self._pending[rid]
                raise ServiceUnavailableError(
                    f"request to service {p.service.decode()!r}: no reply within {self.timeout:g} s "
                    f"after {p.attempts} attempts (broker {self.broker})"
                )
            self.resent += 1
            self._transmit(rid)

    # ------------------------------------------------------------------ high level
    def request(self, service, body: list, timeout: float | None = None) -> list:
        """Send one request and wait for its reply frames (``timeout`` overrides the per-attempt one)."""
        old = self.timeout
        if timeout is not None:
            self.timeout = float(timeout)
        try:
            rid = self.send(service, body)
            while True:
                got = self.recv()
                if got is None:
                    raise ServiceUnavailableError(f"request to service {service!r}: no reply")
                if got[0] == rid:
                    return got[1]
        finally:
            self.timeout = old

    def map(self, service, bodies: Iterable, *, max_in_flight: int = 16) -> Iterator[tuple[object, list]]:
        """Send ``(key, body)`` pairs with up to ``max_in_flight`` outstanding; yield ``(key, reply)``.

        Replies come in completion order; every key is yielded exactly once.
        """
        it = iter(bodies)
        exhausted = False
        while True:
            while not exhausted and self.in_flight < max_in_flight:
                try:
                    key, body = next(it)
                except StopIteration:
                    exhausted = True
                    break
                self.send(service, body, key=key)
            if not self._pending:
                return
            got = self.recv()
            if got is not None:
                yield got

    # ------------------------------------------------------------------ MMI (ZeroMQ RFC 8)
    def mmi(self, name: str, *args: bytes, timeout: float = 5.0) -> list[bytes]:
        """Ask the broker's ``mmi.<name>`` service; return the reply frames as bytes."""
        return [bytes(f) if not isinstance(f, bytes) else f for f in self.request(f"mmi.{name}", list(args), timeout)]

    def service_available(self, service: str, timeout: float = 5.0) -> bool:
        """Whether a worker is registered for ``service`` (``mmi.service`` 200 vs 404)."""
        return self.mmi("service", service.encode(), timeout=timeout)[0] == b"200"

    def services(self, timeout: float = 5.0) -> list[str]:
        """Names of the services with at least one worker (``mmi.services``)."""
        return json.loads(self.mmi("services", timeout=timeout)[1])

    def stats(self, *services: str, timeout: float = 5.0) -> dict:
        """Per-service statistics: queue, workers, idle, busy, requests, served, errors, ..."""
        return json.loads(self.mmi("stats", *(s.encode() for s in services), timeout=timeout)[1])

    def wait_for_service(self, service: str, timeout: float = 30.0, poll: float = 0.05) -> None:
        """Block until ``service`` has a worker; raise :class:`ServiceError` after ``timeout`` [s]."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise ServiceUnavailableError(f"service {service!r}: no worker registered within {timeout:g} s "
                                              f"(broker {self.broker})")
            try:
                if self.service_available(service, timeout=min(2.0, max(left, 0.1))):
                    return
            except ServiceError:
                pass
            time.sleep(min(poll, max(left, 0)))

    def close(self) -> None:
        """Close the socket; requests still in flight are abandoned."""
        self.socket.close(linger=0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
