"""Workers in the broker's process (``Broker.add_local_worker``, ``tpcflow worker --bind``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

sys.path.insert(0, str(Path(__file__).parent))
from mdp_helpers import HB, client, echo, free_port, running, small_event  # noqa: E402

from tpcflow.errors import ServiceError  # noqa: E402
from tpcflow.serve.mdp import Broker, Worker  # noqa: E402
from tpcflow.serve.mdp.batching import per_request  # noqa: E402
from tpcflow.serve.mdp.cosmic import decode_reply, encode_request  # noqa: E402

THRESHOLD_MODULE = """
import numpy as np

def process_net(images):
    return (images > 0.5).astype(np.int64)
"""


@pytest.fixture
def contexts():
    server_ctx, peer_ctx = zmq.Context(), zmq.Context()
    yield server_ctx, peer_ctx
    server_ctx.destroy(linger=0)
    peer_ctx.destroy(linger=0)


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "batch-thread"])
def test_local_and_tcp_workers_share_one_broker(contexts, inline):
    server_ctx, peer_ctx = contexts
    broker = Broker("tcp://127.0.0.1:0", heartbeat_interval=HB, heartbeat_liveness=10, context=server_ctx)
    local = broker.add_local_worker("local", per_request(echo), slots=4, max_batch=3, max_wait=0.01, inline=inline)
    remote = Worker(broker.endpoint, "remote", per_request(lambda body: [b"remote:" + bytes(body[0])]),
                    heartbeat_interval=HB, heartbeat_liveness=10, context=peer_ctx)
    payload = np.random.default_rng(0).bytes(1 << 20)
    with running(broker, remote):
        with client(broker.endpoint, peer_ctx) as c:
            c.wait_for_service("remote", 10)
            assert c.services() == ["local", "remote"]
            assert c.request("local", [payload, b"second frame"]) == [payload, b"second frame"]
            assert c.request("remote", [b"x"]) == [b"remote:x"]
            replies = dict(c.map("local", ((i, [b"%d" % i]) for i in range(50)), max_in_flight=8))
            stats = c.stats("local")["services"]["local"]
            time.sleep(3 * HB)  # heartbeat ticks pass: local slots never expire
            assert c.request("local", [b"still here"]) == [b"still here"]
    assert replies == {i: [b"%d" % i] for i in range(50)}
    assert stats["served"] == 51 and stats["workers"] == 4 and stats["errors"] == 0 and stats["queue"] == 0
    assert local.served == 52
    if not inline:
        assert max(local.batcher.batch_sizes) > 1  # 8 in flight over 4 slots: batches formed


def test_local_and_remote_workers_of_one_service_share_its_requests(contexts):
    server_ctx, peer_ctx = contexts
    broker = Broker("tcp://127.0.0.1:0", heartbeat_interval=HB, heartbeat_liveness=10, context=server_ctx)
    broker.add_local_worker("who", per_request(lambda body: [b"local"]), slots=1, max_batch=1)
    remote = Worker(broker.endpoint, "who", per_request(lambda body: [b"remote"]), heartbeat_interval=HB,
                    heartbeat_liveness=10, context=peer_ctx)
    with running(broker, remote):
        with client(broker.endpoint, peer_ctx) as c:
            end = time.monotonic() + 10
            while c.stats("who")["services"]["who"]["workers"] < 2:  # the remote worker registers
                assert time.monotonic() < end, "the remote worker did not register"
                time.sleep(0.02)
            answers = [r[0] for _, r in c.map("who", ((i, [b"?"]) for i in range(40)), max_in_flight=4)]
    assert len(answers) == 40 and {b"local", b"remote"} <= set(answers)


def test_local_worker_errors_become_error_replies(contexts):
    server_ctx, peer_ctx = contexts
    broker = Broker("tcp://127.0.0.1:0", heartbeat_interval=HB, context=server_ctx)

    def fail_on_odd(body):
        if int(bytes(body[0])) % 2:
            raise ValueError("odd request")
        return [bytes(body[0])]

    broker.add_local_worker("half", per_request(fail_on_odd), slots=2, max_batch=2)
    broker.add_local_worker("broken", lambda bodies: [], inline=True)  # wrong number of replies
    with running(broker):
        with client(broker.endpoint, peer_ctx) as c:
            assert c.request("half", [b"2"]) == [b"2"]
            with pytest.raises(ServiceError, match=r"'half' failed \(500\).*ValueError: odd request"):
                c.request("half", [b"3"])
            with pytest.raises(ServiceError, match=r"'broken' failed \(500\).*returned 0 results for 1 requests"):
                c.request("broken", [b"x"])
            assert c.request("half", [b"4"]) == [b"4"]  # the failures freed their slots
            stats = c.stats()["services"]
        with pytest.raises(RuntimeError, match="before run"):
            broker.add_local_worker("late", per_request(echo))
    assert stats["half"]["errors"] == 1 and stats["half"]["served"] == 3 and stats["broken"]["errors"] == 1


def _cli(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tpcflow.cli.main", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_worker_cli_hosting_the_broker_serves_clients_and_other_workers(tmp_path):
    module = tmp_path / "threshold.py"
    module.write_text(THRESHOLD_MODULE)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    proc = _cli("worker", "--bind", endpoint, "--service", "seg", "--module", str(module), "--max-batch", "2",
                "--heartbeat-interval", str(HB), "--heartbeat-liveness", "10")
    ctx = zmq.Context()
    try:
        other = Worker(endpoint, "echo", per_request(echo), heartbeat_interval=HB, heartbeat_liveness=10, context=ctx)
        with running(other):
            with client(endpoint, ctx, timeout=10) as c:
                c.wait_for_service("seg", 60)
                c.wait_for_service("echo", 10)
                planes = small_event(3)
                eid, labels, _ = decode_reply(c.request("seg", encode_request((1, 0, 7), planes)))
                assert c.request("echo", [b"via the hosted broker"]) == [b"via the hosted broker"]
                assert c.services() == ["echo", "seg"]
        assert eid == (1, 0, 7)
        for p, lab in zip(planes, labels):
            np.testing.assert_array_equal(lab, (p.values > 0.5).astype(np.uint8))
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0
        assert f"hosting the broker on {endpoint}" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        ctx.destroy(linger=0)


def test_worker_cli_rejects_contradictory_endpoints(tmp_path):
    module = tmp_path / "threshold.py"
    module.write_text(THRESHOLD_MODULE)
    cases = {
        ("--bind", "tcp://127.0.0.1:1", "--broker", "tcp://127.0.0.1:2"): "not both",
        ("--curve-allowed", str(tmp_path)): "needs --bind",
        ("--bind", "tcp://127.0.0.1:1", "--curve-server", os.devnull): "does not go with --bind",
    }
    for extra, message in cases.items():
        proc = _cli("worker", "--module", str(module), *extra)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, err
        assert "tpcflow worker: error:" in err and message in err, err
