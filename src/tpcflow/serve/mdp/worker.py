"""MDP/0.2 worker: registers a service, answers requests, heartbeats while busy, reconnects.

One :class:`Worker` holds ``slots`` MDP connections to the broker (each one a worker in the
RFC 18 sense, handling one request at a time), so that the broker can hand it up to ``slots``
requests at once for dynamic batching. A single socket thread serves every slot; the model runs
in a :class:`~tpcflow.serve.mdp.batching.Batcher` thread, so heartbeats keep flowing while it is
busy. When the broker stays silent for ``liveness * interval`` seconds, or sends DISCONNECT, the
slot closes its socket and reconnects on a new one with exponential backoff, then sends READY
again (RFC 18, "Opening and Closing a Connection"); this survives a broker restart.

Source: ZeroMQ RFC 18 (MDP/0.2); wire dialect of majortomo 0.2.0.
"""

from __future__ import annotations

import collections
import gc
import logging
import time
from dataclasses import dataclass

import zmq

from tpcflow.errors import ConfigError
from tpcflow.serve.mdp import protocol as P
from tpcflow.serve.mdp.batching import Batcher, Job, Waker, run_batch
from tpcflow.serve.mdp.lifecycle import ThreadLoop

__all__ = ["Worker"]

log = logging.getLogger(__name__)


@dataclass
class _Slot:
    socket: zmq.Socket | None = None
    generation: int = 0
    busy: bool = False
    last_recv: float = 0.0
    last_send: float = 0.0
    reconnect_at: float | None = None
    backoff: float = 0.0
    heard: bool = False  # a HEARTBEAT or REQUEST came since the last connect: the broker took READY
    monitor: zmq.Socket | None = None  # CURVE only: the socket's handshake events


class Worker(ThreadLoop):
    """Serve one service for an MDP broker.

    Parameters
    ----------
    broker : str
        Broker endpoint, e.g. ``"tcp://127.0.0.1:5555"``.
    service : str
        Service name (printable ASCII).
    handler : callable
        Batch handler ``handler(bodies) -> replies``: one reply (list of frames) or Exception per
        request body (list of ``zmq.Frame``). Wrap a per-request function with
        :func:`~tpcflow.serve.mdp.batching.per_request`.
    slots : int
        Concurrent requests this worker accepts (MDP connections); at least ``max_batch``.
    max_batch, max_wait
        Dynamic batching limits [requests], [s].
    heartbeat_interval : float
        Seconds between heartbeats [s]; must match the broker's.
    heartbeat_liveness : int
        Reconnect after ``liveness * interval`` seconds without a message from the broker.
    reconnect_max : float
        Upper bound of the exponential reconnect backoff [s].
    inline : bool
        Run the handler in the socket thread (lowest latency, for handlers of well under one
        heartbeat interval; no heartbeats while it runs).
    context : zmq.Context, optional
    curve : tpcflow.serve.mdp.curve.CurveClient, optional
    ssh : tpcflow.serve.mdp.ssh.SSHTunnel, optional
        Reach ``broker`` (an address as seen from the ssh server) through an ssh tunnel.
    max_refusals : int
        READYs the broker may refuse in a row (answered by DISCONNECT, as a broker does for a key
        that may not serve) before the worker gives up: :attr:`error` is set and :meth:`run`
        returns, instead of retrying forever while looking healthy.
    """

    def __init__(
        self,
        broker: str,
        service: str,
        handler,
        *,
        slots: int | None = None,
        max_batch: int = 1,
        max_wait: float = 0.0,
        heartbeat_interval: float = 2.5,
        heartbeat_liveness: int = 4,
        reconnect_max: float = 10.0,
        inline: bool = False,
        context: zmq.Context | None = None,
        curve=None,
        max_refusals: int = 5,
        ssh=None,
    ):
        self.broker = P.check_endpoint(broker, "broker")
        self.service = P.validate_service_name(service)
        self.handler = handler
        self.slots_n = int(slots if slots is not None else max(1, max_batch))
        if self.slots_n < 1:
            raise ValueError(f"slots must be >= 1, but got slots={slots}")
        self.heartbeat_interval = float(heartbeat_interval)
        self.expiry = float(heartbeat_interval) * int(heartbeat_liveness)
        self.reconnect_max = float(reconnect_max)
        self.inline = inline
        self.max_batch, self.max_wait = max_batch, max_wait
        self._ctx = context or zmq.Context.instance()
        self._curve = curve
        # through ssh: the tunnel opens now (its errors are the caller's), and every reconnection uses it
        self._endpoint = ssh.endpoint(self.broker) if ssh is not None else self.broker
        self._slots = [_Slot() for _ in range(self.slots_n)]
        ThreadLoop.__init__(self)
        self.thread_name = f"mdp-worker-{self.service.decode()}"
        self._done: collections.deque = collections.deque()
        self._poll_dirty = True
        self._next_timers = 0.0
        self.registrations = 0  # READY messages sent (grows on every reconnect)
        self.served = 0
        self.max_refusals = int(max_refusals)
        self.refusals = 0  # READYs refused in a row
        #: set when the worker gave up (ConfigError); :meth:`run` then returns
        self.error: Exception | None = None

    # ------------------------------------------------------------------ lifecycle
    # start() / stop(): ThreadLoop's; stop makes the loop send DISCONNECT and exit
    def run(self, *, freeze_gc: bool = False) -> None:
        """Serve until :meth:`stop` (blocking)."""
        if freeze_gc:  # a dedicated worker process: keep start-up objects out of full collections
            gc.freeze()
        waker = Waker(self._ctx, "worker")

        def deliver(job: Job, reply) -> None:
            self._done.append((job, reply))
            waker.wake()

        batcher = None
        if not self.inline:
            batcher = Batcher(self.handler, deliver, max_batch=self.max_batch, max_wait=self.max_wait)
        now = time.monotonic()
        for i in range(self.slots_n):
            self._connect(i, now)
        try:
            self._loop(waker, batcher)
        finally:
            for slot in self._slots:
                if slot.socket is not None:
                    try:
                        self._send(slot, P.DISCONNECT)
                    except zmq.ZMQError:
                        pass
                    self._close_monitor(slot)
                    slot.socket.close(linger=200)
                    slot.socket = None
            if batcher is not None:
                batcher.close()
            waker.close()

    # ------------------------------------------------------------------ socket loop
    def _loop(self, waker: Waker, batcher: Batcher | None) -> None:
        poller, owners, monitors = None, {}, {}
        while not self._stop.is_set():
            if poller is None or self._poll_dirty:  # rebuilt only when a slot (re)connects
                poller = zmq.Poller()
                poller.register(waker.rx, zmq.POLLIN)
                owners = {s.socket: i for i, s in enumerate(self._slots) if s.socket is not None}
                monitors = {s.monitor: i for i, s in enumerate(self._slots) if s.monitor is not None}
                for sock in [*owners, *monitors]:
                    poller.register(sock, zmq.POLLIN)
                self._poll_dirty = False
            events = dict(poller.poll(min(100.0, self.heartbeat_interval * 500)))
            now = time.monotonic()
            if waker.rx in events:
                waker.drain()
            while self._done:
                job, reply = self._done.popleft()
                self._finish(job, reply, now)
            for sock, i in owners.items():
                if sock in events:
                    self._drain(i, batcher, now)
            for sock, i in monitors.items():
                if sock in events and self._slots[i].monitor is sock:
                    self._handshake_events(i, now)
            if now >= self._next_timers:
                self._timers(now)
                self._next_timers = now + min(0.05, self.heartbeat_interval / 4)

    def _drain(self, i: int, batcher: Batcher | None, now: float) -> None:
        slot = self._slots[i]
        while slot.socket is not None:
            try:
                frames = P.recv_frames(slot.socket, P.NOBLOCK)
            except zmq.Again:
                return
            slot.last_recv = now
            if len(frames) < 3 or len(frames[0]) or frames[1].bytes != P.WORKER_HEADER:
                log.warning("slot %d: dropped a malformed message from the broker (%d frames)", i, len(frames))
                continue
            cmd = frames[2].bytes
            if cmd == P.DISCONNECT:
                if not slot.heard:  # DISCONNECT answering READY: the broker refused this worker
                    self._refused(i, now)
                    return
                log.info("slot %d: broker sent DISCONNECT; reconnecting", i)
                self._reconnect(i, now, delay=0.0)
                return
            slot.heard, slot.backoff, self.refusals = True, 0.0, 0
            if cmd == P.HEARTBEAT:
                continue
            if cmd != P.REQUEST or len(frames) < 5 or len(frames[4]):
                # RFC 18: treat the peer as invalid; a new connection makes the broker re-dispatch
                log.warning("slot %d: invalid command %r from the broker; reconnecting", i, cmd)
                self._send(slot, P.DISCONNECT)
                self._reconnect(i, now, delay=0.0)
                return
            client = frames[3].bytes
            rid, body = P.split_rid(frames[5:])
            slot.busy = True
            job = Job(i, slot.generation, client, rid, body)
            if batcher is None:
                self._finish(job, run_batch(self.handler, [body])[0], time.monotonic())
            else:
                batcher.put(job)

    def _finish(self, job: Job, reply, now: float) -> None:
        slot = self._slots[job.slot]
        if slot.generation != job.generation or slot.socket is None:
            return  # the broker behind that request is gone; the client retries or it was re-dispatched
        if isinstance(reply, BaseException):
            body = P.error_body(500, f"service {self.service.decode()!r}: {type(reply).__name__}: {reply}")
        else:
            body = list(reply)
        head = [b"", P.WORKER_HEADER, P.FINAL, job.client, b""]
        if job.rid is not None:
            head.append(P.pack_rid(job.rid))
        try:
            P.send_frames(slot.socket, head + body, P.NOBLOCK)
        except zmq.Again:
            log.warning("slot %d: broker unreachable, reply dropped (the client retries)", job.slot)
        slot.last_send = now
        slot.last_recv = max(slot.last_recv, now)  # restart the liveness clock after a long job
        slot.busy = False
        self.served += 1

    def _timers(self, now: float) -> None:
        for i, slot in enumerate(self._slots):
            if slot.socket is None:
                if slot.reconnect_at is not None and now >= slot.reconnect_at:
                    self._connect(i, now)
                continue
            if not slot.busy and now - slot.last_recv > self.expiry:
                log.info("slot %d: no message from the broker for %.1f s; reconnecting", i, now - slot.last_recv)
                self._reconnect(i, now, delay=None)
                continue
            if now - slot.last_send >= self.heartbeat_interval:
                self._send(slot, P.HEARTBEAT)

    def _handshake_events(self, i: int, now: float) -> None:
        """CURVE handshake events of slot ``i``: a refused key or a failed handshake is a refusal."""
        from zmq.utils.monitor import recv_monitor_message

        slot = self._slots[i]
        while slot.monitor is not None:
            try:
                event = recv_monitor_message(slot.monitor, zmq.NOBLOCK)["event"]
            except zmq.Again:
                return
            if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self._refused(i, now, "the broker's authenticator refused this worker's CURVE key: its public "
                                      "key is not in the broker's allowed keys folder (docs/security.md)")
            elif event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                self._refused(i, now, "the CURVE handshake failed: the broker does not speak CurveZMQ "
                                      "(start it with --curve-secret)")

    def _refused(self, i: int, now: float, why: str | None = None) -> None:
        """The broker refused this worker: retry with backoff, give up after ``max_refusals``.

        ``why`` None: READY answered by DISCONNECT (a key that may connect but not serve).
        """
        self.refusals += 1
        if why is None:
            why = ("READY answered by DISCONNECT: with CurveZMQ, this worker's public key is not in the broker's "
                   "worker keys folder (docs/security.md); without it, the service name is one the broker "
                   "reserves (mmi.*)")
        if self.refusals >= self.max_refusals:
            self.error = ConfigError(
                f"the broker at {self.broker} refused to register this worker for service "
                f"{self.service.decode()!r} {self.refusals} times in a row ({why})"
            )
            log.error("%s", self.error)
            self._stop.set()
            return
        log.warning("slot %d: the broker refused this worker (%d of %d: %s); retrying", i, self.refusals,
                    self.max_refusals, why)
        self._reconnect(i, now, delay=None)

    def _close_monitor(self, slot: _Slot) -> None:
        if slot.monitor is not None:
            slot.socket.disable_monitor()
            slot.monitor.close(linger=0)
            slot.monitor = None

    # ------------------------------------------------------------------ connections
    def _connect(self, i: int, now: float) -> None:
        slot = self._slots[i]
        sock = self._ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.sndhwm = 0
        sock.rcvhwm = 0
        if self._curve is not None:
            self._curve.apply(sock)
            events = zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            slot.monitor = sock.get_monitor_socket(events)
        sock.connect(self._endpoint)
        slot.socket = sock
        self._poll_dirty = True
        slot.generation += 1
        slot.busy = False
        slot.heard = False
        slot.reconnect_at = None
        slot.last_recv = now
        self._send(slot, P.READY, self.service)
        self.registrations += 1

    def _reconnect(self, i: int, now: float, delay: float | None) -> None:
        slot = self._slots[i]
        if slot.socket is not None:
            self._close_monitor(slot)
            slot.socket.close(linger=0)
            slot.socket = None
            self._poll_dirty = True
        if delay is None:  # liveness expired: back off exponentially
            slot.backoff = min(self.reconnect_max, max(self.heartbeat_interval, slot.backoff * 2))
            delay = slot.backoff
        slot.busy = False
        slot.reconnect_at = now + delay

    def _send(self, slot: _Slot, command: bytes, *frames) -> None:
        # NOBLOCK: a DEALER without a connected peer (broker down, CURVE refused) would block
        try:
            P.send_frames(slot.socket, [b"", P.WORKER_HEADER, command, *frames], P.NOBLOCK)
        except zmq.Again:
            pass  # nobody to hear it; liveness will reconnect
        slot.last_send = time.monotonic()
