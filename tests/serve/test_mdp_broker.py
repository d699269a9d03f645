"""MDP broker: dispatch, MMI, deadlines, re-dispatch (injected clock) and malformed messages."""

from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import zmq

sys.path.insert(0, str(Path(__file__).parent))
from mdp_helpers import HB, client, make_stack, running  # noqa: E402

from tpcflow.errors import ServiceError  # noqa: E402
from tpcflow.serve.mdp import Broker, Worker  # noqa: E402
from tpcflow.serve.mdp import protocol as P  # noqa: E402
from tpcflow.serve.mdp.batching import per_request  # noqa: E402


def test_echo_many_in_flight_and_fair_lru_dispatch(ctx):
    seen = Counter()

    def tag(i):
        def handler(body):
            seen[i] += 1
            return [b"%d" % i] + [bytes(f) for f in body]
        return per_request(handler)

    broker, _ = make_stack(ctx, n_workers=0)
    workers = [Worker(broker.endpoint, "echo", tag(i), heartbeat_interval=HB, context=ctx) for i in range(3)]
    with running(broker, *workers):
        with client(broker.endpoint, ctx) as c:
            c.wait_for_service("echo", 5)
            while c.stats("echo")["services"]["echo"]["workers"] < 3:
                time.sleep(0.02)
            replies = dict(c.map("echo", ((i, [b"x%d" % i]) for i in range(600)), max_in_flight=24))
            stats = c.stats()["services"]["echo"]
    assert sorted(replies) == list(range(600))
    assert all(r[1] == b"x%d" % i for i, r in replies.items())
    assert sum(seen.values()) == 600 and min(seen.values()) >= 100, seen  # LRU spreads the load
    assert stats["served"] == 600 and stats["requests"] == 600 and stats["queue"] == 0 and stats["errors"] == 0


def test_mmi_service_listing_and_stats(ctx):
    broker, workers = make_stack(ctx, service="seg")
    with running(broker, *workers):
        with client(broker.endpoint, ctx) as c:
            c.wait_for_service("seg", 5)
            assert c.mmi("service", b"seg") == [b"200"]
            assert c.mmi("service", b"nothing") == [b"404"]
            assert c.mmi("bogus") == [b"501"]
            assert c.services() == ["seg"]
            c.request("seg", [b"a"])
            st = c.stats("seg")
    assert set(st["services"]) == {"seg"}
    assert st["services"]["seg"]["served"] == 1 and st["services"]["seg"]["workers"] == 1


def test_unknown_service_fails_fast_with_clear_error(ctx):
    broker, _ = make_stack(ctx, n_workers=0)
    with running(broker):
        with client(broker.endpoint, ctx, timeout=5) as c:
            t = time.monotonic()
            with pytest.raises(ServiceError, match=r"'nosuch'.*404.*no worker registered"):
                c.request("nosuch", [b"x"])
            assert time.monotonic() - t < 1.0


def test_unknown_service_deadline_then_error_or_late_worker(ctx):
    broker, workers = make_stack(ctx, n_workers=1, service="late", unknown_service_timeout=0.5)
    with running(broker):
        with client(broker.endpoint, ctx, timeout=5) as c:
            t = time.monotonic()
            with pytest.raises(ServiceError, match=r"within 0.5 s"):
                c.request("other", [b"x"])
            assert 0.45 <= time.monotonic() - t < 2.0
            # a worker that registers inside the deadline gets the queued request
            rid = c.send("late", [b"queued"])
            time.sleep(0.1)
            with running(workers[0]):
                key, reply = c.recv(timeout=5)
            assert key == rid and reply == [b"queued"]


def test_malformed_messages_never_stop_the_broker(ctx):
    broker, workers = make_stack(ctx, n_workers=1)
    rng = random.Random(1234)
    tokens = [b"", P.CLIENT_HEADER, P.WORKER_HEADER, *P.COMMAND_NAMES, b"mmi.service", b"echo", b"\xff" * 300,
              P.pack_rid(7), P.ERROR_MARK]
    with running(broker, *workers):
        socks = [ctx.socket(zmq.DEALER) for _ in range(4)]
        try:
            for s in socks:
                s.linger = 0
                s.connect(broker.endpoint)
            for i in range(10_000):
                frames = [rng.choice(tokens) if rng.random() < 0.7 else rng.randbytes(rng.randint(0, 12))
                          for _ in range(rng.randint(0, 8))]
                if not frames:
                    frames = [b""]
                socks[i % 4].send_multipart(frames)
            with client(broker.endpoint, ctx) as c:
                end = time.monotonic() + 30
                while time.monotonic() < end:  # wait until the broker has seen the whole flood
                    b = c.stats()["broker"]
                    if b.get("malformed", 0) + b.get("messages", 0) >= 10_000:
                        break
                    time.sleep(0.05)
                # the broker drained the flood and still serves
                assert c.request("echo", [b"still", b"alive"], timeout=20) == [b"still", b"alive"]
                assert c.services() == ["echo"]
        finally:
            for s in socks:
                s.close(0)
    assert broker._thread.is_alive() is False  # stopped by running()
    assert broker.counters["malformed"] > 1000 and broker.counters.get("internal_errors", 0) == 0


def _dealer(ctx, endpoint):
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    s.connect(endpoint)
    return s


def _drain(sock) -> list:
    out = []
    while sock.poll(200):
        out.append(sock.recv_multipart())
    return out


def _recv(broker: Broker):
    assert broker.socket.poll(2000)
    return broker.socket.recv_multipart(copy=False)


def test_redispatch_when_worker_expires_injected_clock(ctx):
    """State machine driven by hand with ``now``: a silent busy worker loses its request to another."""
    broker = Broker("inproc://redispatch", heartbeat_interval=1.0, heartbeat_liveness=3, busy_worker_timeout=2.0,
                    context=ctx)
    try:
        w1, w2, cl = (_dealer(ctx, broker.endpoint) for _ in range(3))
        w1.send_multipart([b"", P.WORKER_HEADER, P.READY, b"svc"])
        broker.handle(_recv(broker), now=0.0)
        cl.send_multipart([b"", P.CLIENT_HEADER, P.REQUEST, b"svc", P.pack_rid(42), b"payload"])
        broker.handle(_recv(broker), now=0.5)
        got = w1.recv_multipart()
        assert got[:3] == [b"", P.WORKER_HEADER, P.REQUEST] and got[4:] == [b"", b"payload"]  # rid stripped
        w2.send_multipart([b"", P.WORKER_HEADER, P.READY, b"svc"])
        broker.handle(_recv(broker), now=2.5)
        broker.tick(now=2.9)  # w1 (last heard at 0.0) is alive until 3.0
        assert broker.services[b"svc"].stats()["busy"] == 1
        broker.tick(now=3.0)
        assert [m[2] for m in _drain(w1)] == [P.HEARTBEAT, P.DISCONNECT]
        moved = [m for m in _drain(w2) if m[2] == P.REQUEST]
        assert len(moved) == 1 and moved[0][-1] == b"payload"
        client_addr = moved[0][3]
        w2.send_multipart([b"", P.WORKER_HEADER, P.FINAL, client_addr, b"", b"done"])
        broker.handle(_recv(broker), now=3.1)
        reply = cl.recv_multipart()
        assert reply == [b"", P.CLIENT_HEADER, P.FINAL, P.pack_rid(42), b"done"]
        st = broker.stats()["services"]["svc"]
        assert st["redispatched"] == 1 and st["served"] == 1 and st["workers"] == 1
        # a zombie reply from the expired worker is refused with DISCONNECT, not forwarded
        w1.send_multipart([b"", P.WORKER_HEADER, P.FINAL, client_addr, b"", b"late"])
        broker.handle(_recv(broker), now=3.2)
        assert not cl.poll(100)
        for s in (w1, w2, cl):
            s.close(0)
    finally:
        broker.socket.close(0)


def test_request_fails_after_max_attempts(ctx):
    broker = Broker("inproc://attempts", heartbeat_interval=1.0, heartbeat_liveness=1, busy_worker_timeout=1.0,
                    max_attempts=2, context=ctx)
    try:
        cl = _dealer(ctx, broker.endpoint)
        cl.send_multipart([b"", P.CLIENT_HEADER, P.REQUEST, b"svc", P.pack_rid(1), b"p"])
        now = 0.0
        broker.handle(_recv(broker), now)  # no worker, timeout 0: immediate 404
        assert P.parse_error(cl.recv_multipart()[4:])[0] == 404
        workers = [_dealer(ctx, broker.endpoint) for _ in range(2)]
        for w in workers:
            w.send_multipart([b"", P.WORKER_HEADER, P.READY, b"svc"])
            broker.handle(_recv(broker), now)
        cl.send_multipart([b"", P.CLIENT_HEADER, P.REQUEST, b"svc", P.pack_rid(2), b"p"])
        broker.handle(_recv(broker), now)  # to workers[0], the least recently used
        workers[1].send_multipart([b"", P.WORKER_HEADER, P.HEARTBEAT])
        broker.handle(_recv(broker), 1.0)
        broker.tick(1.5)  # workers[0] expired: re-dispatched to workers[1]
        assert broker.services[b"svc"].redispatched == 1 and not cl.poll(50)
        broker.tick(3.0)  # workers[1] expired too: second death, give up
        code, text = P.parse_error(cl.recv_multipart()[4:])
        assert code == 500 and "2 workers died" in text
        for s in (cl, *workers):
            s.close(0)
    finally:
        broker.socket.close(0)


def test_a_request_sent_to_an_already_silent_worker_is_not_charged_its_death(ctx):
    """A killed worker's other connections look idle until they expire; a request handed to one of them
    is re-dispatched without using up an attempt (soak test: requests lost to max_attempts)."""
    broker = Broker("inproc://silent", heartbeat_interval=1.0, heartbeat_liveness=3, busy_worker_timeout=1.0,
                    max_attempts=1, context=ctx)
    try:
        cl = _dealer(ctx, broker.endpoint)
        dead, alive = _dealer(ctx, broker.endpoint), _dealer(ctx, broker.endpoint)
        for w in (dead, alive):
            w.send_multipart([b"", P.WORKER_HEADER, P.READY, b"svc"])
            broker.handle(_recv(broker), 0.0)
        alive.send_multipart([b"", P.WORKER_HEADER, P.HEARTBEAT])
        broker.handle(_recv(broker), 1.5)
        cl.send_multipart([b"", P.CLIENT_HEADER, P.REQUEST, b"svc", P.pack_rid(7), b"p"])
        broker.handle(_recv(broker), 1.6)  # to `dead`, the least recently used, silent since 0.0
        assert dead.poll(1000)
        alive.send_multipart([b"", P.WORKER_HEADER, P.HEARTBEAT])
        broker.handle(_recv(broker), 2.5)
        broker.tick(3.1)  # `dead` expired: with max_attempts=1 this used to be a 500 to the client
        assert not cl.poll(50) and broker.services[b"svc"].redispatched == 1
        frames = alive.recv_multipart()
        assert frames[2] == P.REQUEST
        alive.send_multipart([b"", P.WORKER_HEADER, P.FINAL, frames[3], b"", P.pack_rid(7), b"done"])
        broker.handle(_recv(broker), 3.2)
        assert cl.recv_multipart()[-1] == b"done"
        for s in (cl, dead, alive):
            s.close(0)
    finally:
        broker.socket.close(0)


def test_worker_protocol_violations_get_disconnect(ctx):
    broker = Broker("inproc://violations", heartbeat_interval=1.0, context=ctx)
    try:
        w = _dealer(ctx, broker.endpoint)
        w.send_multipart([b"", P.WORKER_HEADER, P.FINAL, b"nobody", b"", b"x"])  # FINAL before READY
        broker.handle(_recv(broker), 0.0)
        assert w.recv_multipart()[2] == P.DISCONNECT
        w.send_multipart([b"", P.WORKER_HEADER, P.READY, b"a"])
        broker.handle(_recv(broker), 0.0)
        w.send_multipart([b"", P.WORKER_HEADER, P.READY, b"a"])  # READY twice
        broker.handle(_recv(broker), 0.0)
        assert w.recv_multipart()[2] == P.DISCONNECT and not broker.workers
        stats = json.loads(json.dumps(broker.stats()))
        assert stats["broker"]["worker_violations"] == 1
        w.close(0)
    finally:
        broker.socket.close(0)


def test_rfc18_text_framing_peers_are_served_in_their_framing(ctx):
    """Peers framed as in the RFC 18 text (no empty delimiter, client REQUEST=0x01, FINAL=0x03
    with the service name) work next to majortomo-framed ones."""
    broker = Broker("inproc://rfc", heartbeat_interval=1.0, context=ctx)
    try:
        w, cl = _dealer(ctx, broker.endpoint), _dealer(ctx, broker.endpoint)
        w.send_multipart([P.WORKER_HEADER, P.READY, b"svc"])
        broker.handle(_recv(broker), 0.0)
        cl.send_multipart([P.CLIENT_HEADER, P.RFC_REQUEST, b"svc", b"hello"])
        broker.handle(_recv(broker), 0.0)
        req = w.recv_multipart()
        assert req[:2] == [P.WORKER_HEADER, P.REQUEST] and req[3:] == [b"", b"hello"]
        w.send_multipart([P.WORKER_HEADER, P.FINAL, req[2], b"", b"HELLO"])
        broker.handle(_recv(broker), 0.0)
        assert cl.recv_multipart() == [P.CLIENT_HEADER, P.RFC_FINAL, b"svc", b"HELLO"]
        cl.send_multipart([P.CLIENT_HEADER, P.RFC_REQUEST, b"mmi.service", b"svc"])
        broker.handle(_recv(broker), 0.0)
        assert cl.recv_multipart() == [P.CLIENT_HEADER, P.RFC_FINAL, b"mmi.service", b"200"]
        broker.tick(5.0)  # silent worker expires: DISCONNECT in its own framing
        assert [P.WORKER_HEADER, P.DISCONNECT] in _drain(w)
        for s in (w, cl):
            s.close(0)
    finally:
        broker.socket.close(0)


def test_busy_worker_expiry_is_separate_from_idle_liveness(ctx):
    """A busy worker that stays silent (no heartbeats while busy, as majortomo's) lives for
    busy_worker_timeout after its last message; an idle one for liveness * interval."""
    broker = Broker("inproc://busy", heartbeat_interval=1.0, heartbeat_liveness=3, busy_worker_timeout=60.0,
                    context=ctx)
    try:
        busy, idle, cl = (_dealer(ctx, broker.endpoint) for _ in range(3))
        busy.send_multipart([b"", P.WORKER_HEADER, P.READY, b"svc"])
        broker.handle(_recv(broker), now=0.0)
        cl.send_multipart([b"", P.CLIENT_HEADER, P.REQUEST, b"svc", P.pack_rid(7), b"long"])
        broker.handle(_recv(broker), now=1.0)  # dispatched at 1.0: busy until 61.0
        idle.send_multipart([b"", P.WORKER_HEADER, P.READY, b"other"])
        broker.handle(_recv(broker), now=1.0)
        broker.tick(now=4.0)  # idle worker silent for 3 s: expired; the busy one is not
        assert [w.service for w in broker.workers.values()] == [b"svc"]
        assert broker.services[b"svc"].stats()["busy"] == 1
        broker.tick(now=60.9)
        assert broker.services[b"svc"].stats()["busy"] == 1
        broker.tick(now=61.0)  # silent past busy_worker_timeout: dead, the request fails over (no other worker)
        assert not broker.workers and broker.counters["workers_expired"] == 2
        for s in (busy, idle, cl):
            s.close(0)
    finally:
        broker.socket.close(0)
    with pytest.raises(ValueError, match="busy_worker_timeout"):
        Broker("inproc://busy-bad", busy_worker_timeout=-1.0, context=ctx)


def test_worker_seen_heartbeating_while_busy_is_held_to_liveness(ctx):
    broker = Broker("inproc://beats", heartbeat_interval=1.0, heartbeat_liveness=3, busy_worker_timeout=60.0,
                    context=ctx)
    try:
        w, cl = _dealer(ctx, broker.endpoint), _dealer(ctx, broker.endpoint)
        w.send_multipart([b"", P.WORKER_HEADER, P.READY, b"svc"])
        broker.handle(_recv(broker), now=0.0)
        cl.send_multipart([b"", P.CLIENT_HEADER, P.REQUEST, b"svc", P.pack_rid(1), b"x"])
        broker.handle(_recv(broker), now=0.0)
        w.send_multipart([b"", P.WORKER_HEADER, P.HEARTBEAT])  # heartbeats while busy (tpcflow's Worker)
        broker.handle(_recv(broker), now=1.0)
        broker.tick(now=3.9)
        assert broker.workers
        broker.tick(now=4.0)  # then silent for 3 s: dead although busy_worker_timeout is 60 s
        assert not broker.workers
        for s in (w, cl):
            s.close(0)
    finally:
        broker.socket.close(0)


def test_broker_and_worker_share_one_lifecycle(ctx):
    from tpcflow.serve.mdp import Worker
    from tpcflow.serve.mdp.batching import per_request
    from tpcflow.serve.mdp.lifecycle import ThreadLoop

    broker = Broker("tcp://127.0.0.1:0", heartbeat_interval=HB, context=ctx)
    worker = Worker(broker.endpoint, "echo", per_request(lambda body: body), heartbeat_interval=HB, context=ctx)
    assert isinstance(broker, ThreadLoop) and isinstance(worker, ThreadLoop)
    idle = Worker(broker.endpoint, "idle", per_request(lambda body: body), context=ctx)
    idle.stop()  # never started: returns at once, and a later start() runs no loop
    assert idle.stopping
    threads = [broker.start(), worker.start()]
    assert [t.name for t in threads] == ["mdp-broker", "mdp-worker-echo"] and all(t.daemon for t in threads)
    with client(broker.endpoint, ctx) as c:
        c.wait_for_service("echo", 5)
        assert c.request("echo", [b"hi"]) == [b"hi"]
    t0 = time.monotonic()
    worker.stop()
    broker.stop()
    assert not any(t.is_alive() for t in threads) and time.monotonic() - t0 < 5
