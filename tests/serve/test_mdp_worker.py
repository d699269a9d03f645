"""Worker behaviour: heartbeats while busy, dynamic batching, error replies, retries/duplicates, demo hook."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from mdp_helpers import HB, client, echo, running  # noqa: E402

from tpcflow.errors import ServiceError  # noqa: E402
from tpcflow.serve.mdp import Broker, Worker  # noqa: E402
from tpcflow.serve.mdp.batching import per_request  # noqa: E402


def test_busy_worker_keeps_heartbeating_so_no_redispatch(ctx):
    broker = Broker("tcp://127.0.0.1:0", heartbeat_interval=HB, heartbeat_liveness=3, context=ctx)

    def slow(body):
        time.sleep(0.8)  # 0.8 s, well past the broker's 0.3 s liveness
        return echo(body)

    worker = Worker(broker.endpoint, "slow", per_request(slow), heartbeat_interval=HB, heartbeat_liveness=3,
                    context=ctx)
    with running(broker, worker):
        with client(broker.endpoint, ctx) as c:
            c.wait_for_service("slow", 5)
            assert c.request("slow", [b"patience"]) == [b"patience"]
            st = c.stats("slow")["services"]["slow"]
    assert st["redispatched"] == 0 and st["served"] == 1 and st["workers"] == 1


def test_dynamic_batching_groups_concurrent_requests(ctx):
    sizes = []

    def handler(bodies):
        sizes.append(len(bodies))
        time.sleep(0.05)
        return [echo(b) for b in bodies]

    broker = Broker("tcp://127.0.0.1:0", heartbeat_interval=HB, heartbeat_liveness=10, context=ctx)
    worker = Worker(broker.endpoint, "batch", handler, max_batch=4, max_wait=0.2, slots=8, heartbeat_interval=HB,
                    heartbeat_liveness=10, context=ctx)
    with running(broker, worker):
        with client(broker.endpoint, ctx) as c:
            c.wait_for_service("batch", 5)
            while c.stats("batch")["services"]["batch"]["workers"] < 8:
                time.sleep(0.02)
            replies = dict(c.map("batch", ((i, [b"%d" % i]) for i in range(16)), max_in_flight=16))
    assert replies == {i: [b"%d" % i] for i in range(16)}
    assert sum(sizes) == 16 and max(sizes) <= 4 and max(sizes) > 1, sizes


def test_handler_error_is_an_error_reply_and_counted(ctx):
    def boom(body):
        if bytes(body[0]) == b"bad":
            raise ValueError("cannot segment this")
        return echo(body)

    broker = Broker("tcp://127.0.0.1:0", heartbeat_interval=HB, heartbeat_liveness=10, context=ctx)
    worker = Worker(broker.endpoint, "svc", per_request(boom), heartbeat_interval=HB, heartbeat_liveness=10,
                    context=ctx)
    with running(broker, worker):
        with client(broker.endpoint, ctx) as c:
            c.wait_for_service("svc", 5)
            with pytest.raises(ServiceError, match=r"\(500\).*ValueError: cannot segment this"):
                c.request("svc", [b"bad"])
            assert c.request("svc", [b"good"]) == [b"good"]
            st = c.stats("svc")["services"]["svc"]
    assert st["errors"] == 1 and st["served"] == 2


def test_client_retry_gets_one_reply_and_drops_the_duplicate(ctx):
    release = threading.Event()

    def slow_first(body):
        if not release.is_set():
            release.set()
            time.sleep(0.5)  # longer than the client's per-attempt timeout
        return echo(body)

    broker = Broker("tcp://127.0.0.1:0", heartbeat_interval=HB, heartbeat_liveness=10, context=ctx)
    worker = Worker(broker.endpoint, "svc", per_request(slow_first), slots=2, max_batch=1, heartbeat_interval=HB,
                    heartbeat_liveness=10, context=ctx)
    with running(broker, worker):
        with client(broker.endpoint, ctx, timeout=0.3, retries=3) as c:
            c.wait_for_service("svc", 5)
            assert c.request("svc", [b"once"]) == [b"once"]
            assert c.resent >= 1
            t = time.monotonic()
            while c.duplicates == 0 and time.monotonic() - t < 3:  # the late first reply arrives and is dropped
                c.send("svc", [b"ping"])
                c.recv(timeout=0.3)
            assert c.duplicates >= 1


def test_demo_hook_segments_a_synthetic_file(tmp_path):
    pytest.importorskip("torch")
    import torch

    from tpcflow.io import open_larcv3
    from tpcflow.models.checkpoint import save_checkpoint
    from tpcflow.models.registry import NetworkConfig, build_network
    from tpcflow.serve.mdp.inprocess import segment_via_broker
    from tpcflow.sim.sbnd import generate_file

    cfg = NetworkConfig(n_initial_filters=2, network_depth=2, blocks_per_layer=1, blocks_deepest_layer=1,
                        blocks_final=1, bottleneck_deepest=4)
    torch.manual_seed(1)
    ckpt = save_checkpoint(tmp_path / "tiny.ckpt", build_network(cfg), cfg)
    inp = generate_file(tmp_path / "in.h5", 2, seed=5, downsample=4)
    res = segment_via_broker(ckpt, [inp], tmp_path / "out.h5", progress=False)
    assert (res.entries, res.sent) == (2, 2)
    r_in, r_out = open_larcv3(inp), open_larcv3(res.output)
    np.testing.assert_array_equal(r_in.event_ids, r_out.event_ids)
    for e in range(2):
        for p_in, p_out in zip(r_in.read(e).products["sparse2d/sbndwire"],
                               r_out.read(e).products["sparse2d/cosmicseg_pred"]):
            np.testing.assert_array_equal(p_in.index, p_out.index)
            assert set(np.unique(p_out.values)) <= {0.0, 1.0, 2.0}
