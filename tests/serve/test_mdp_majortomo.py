"""Wire compatibility with majortomo 0.2.0 in both directions."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

import pytest
import zmq

sys.path.insert(0, str(Path(__file__).parent))
from mdp_helpers import HB, client, echo, free_port, running  # noqa: E402

from tpcflow.serve.mdp import Broker, Worker  # noqa: E402
from tpcflow.serve.mdp.batching import per_request  # noqa: E402

majortomo = pytest.importorskip("majortomo")
mbroker = pytest.importorskip("majortomo.broker")


def _majortomo_worker(endpoint, ctx, stop: threading.Event):
    w = majortomo.Worker(endpoint, b"upper", heartbeat_interval=HB, heartbeat_timeout=HB * 10, zmq_context=ctx)
    w.connect()
    try:
        while not stop.is_set():
            try:
                client_addr, request = w.wait_for_request()
            except majortomo.error.Disconnected:
                return
            if request[0] == b"parts":  # MDP/0.2 multiple replies: PARTIAL, PARTIAL, FINAL
                w.send_reply_partial(client_addr, [b"p1"])
                w.send_reply_partial(client_addr, [b"p2"])
                w.send_reply_final(client_addr, [b"end"])
                continue
            w.send_reply_final(client_addr, [f.upper() for f in request])
    except zmq.ZMQError:
        pass


def test_majortomo_client_and_worker_against_our_broker(ctx):
    broker = Broker("tcp://127.0.0.1:0", heartbeat_interval=HB, heartbeat_liveness=10, context=ctx)
    stop = threading.Event()
    with running(broker):
        t = threading.Thread(target=_majortomo_worker, args=(broker.endpoint, ctx, stop), daemon=True)
        t.start()
        with client(broker.endpoint, ctx) as ours:
            ours.wait_for_service("upper", 5)
            mc = majortomo.Client(broker.endpoint, zmq_context=ctx)
            mc.connect()
            try:
                for i in range(5):
                    mc.send(b"upper", b"hello %d" % i, b"two")
                    assert mc.recv_all_as_list(timeout=5) == [b"HELLO %d" % i, b"TWO"]
                # our client (request ids) to the majortomo worker: the broker strips and restores the id
                replies = dict(ours.map("upper", ((i, [b"x%d" % i]) for i in range(20)), max_in_flight=8))
                assert replies == {i: [b"X%d" % i] for i in range(20)}
                assert ours.request("upper", [b"parts"]) == [b"p1", b"p2", b"end"]
                # an unknown service answers the majortomo client too, instead of queueing forever
                mc.send(b"missing", b"x")
                err = mc.recv_all_as_list(timeout=5)
                assert err[1] == b"404"
            finally:
                mc.close()
            stop.set()
            ours.request("upper", [b"bye"])  # wakes the majortomo worker so it sees the stop flag
    t.join(5)
    assert not t.is_alive()


def test_our_client_and_worker_against_majortomo_broker(ctx):
    logging.getLogger("majortomo").setLevel(logging.ERROR)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    mb = mbroker.Broker(bind=endpoint, heartbeat_interval=HB, heartbeat_timeout=HB * 10, zmq_context=ctx)
    bt = threading.Thread(target=mb.run, daemon=True)
    bt.start()
    worker = Worker(endpoint, "echo", per_request(echo), max_batch=2, heartbeat_interval=HB, heartbeat_liveness=10,
                    context=ctx)
    try:
        with running(worker):
            with client(endpoint, ctx, timeout=5) as c:
                # majortomo has no MMI and queues unknown services: just send when the worker is up
                assert c.request("echo", [b"a", b"b"], timeout=5) == [b"a", b"b"]
                replies = dict(c.map("echo", ((i, [b"%d" % i]) for i in range(50)), max_in_flight=10))
                assert replies == {i: [b"%d" % i] for i in range(50)}
            mc = majortomo.Client(endpoint, zmq_context=ctx)
            mc.connect()
            try:
                mc.send(b"echo", b"plain")
                assert mc.recv_all_as_list(timeout=5) == [b"plain"]
            finally:
                mc.close()
    finally:
        mb.stop()
        bt.join(5)


def test_busy_majortomo_worker_without_heartbeats_is_not_expired(ctx):
    """majortomo's worker sends no heartbeat while it processes: a request 4x longer than the idle
    expiry completes, and the worker is not taken for dead (busy_worker_timeout, issue 12)."""
    import time

    broker = Broker("tcp://127.0.0.1:0", heartbeat_interval=HB, heartbeat_liveness=3, busy_worker_timeout=30 * HB,
                    context=ctx)
    long_s = 12 * HB  # idle expiry is 3 * HB

    def slow_worker():
        w = majortomo.Worker(broker.endpoint, b"slow", heartbeat_interval=HB, heartbeat_timeout=HB * 40,
                             zmq_context=ctx)
        w.connect()
        try:
            client_addr, request = w.wait_for_request()
            time.sleep(long_s)  # busy: no heartbeats
            w.send_reply_final(client_addr, [b"done " + request[0]])
        finally:
            w.close()

    with running(broker):
        t = threading.Thread(target=slow_worker, daemon=True)
        t.start()
        with client(broker.endpoint, ctx) as ours:
            ours.wait_for_service("slow", 5)
            t0 = time.monotonic()
            assert ours.request("slow", [b"x"]) == [b"done x"]
            assert time.monotonic() - t0 >= long_s
        stats = broker.stats()
        assert stats["broker"].get("workers_expired", 0) == 0
        assert stats["services"]["slow"]["redispatched"] == 0
    t.join(5)
    assert not t.is_alive()
