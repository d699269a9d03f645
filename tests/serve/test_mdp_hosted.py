"""A worker in the broker's process (``Broker.local_endpoint``, ``tpcflow worker --bind``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).parent))
from mdp_helpers import HB, client, echo, free_port, running, small_event  # noqa: E402

from tpcflow.serve.mdp import Broker, Worker  # noqa: E402
from tpcflow.serve.mdp.batching import per_request  # noqa: E402
from tpcflow.serve.mdp.cosmic import decode_reply, encode_request  # noqa: E402

THRESHOLD_MODULE = """
import numpy as np

def process_net(images):
    return (images > 0.5).astype(np.int64)
"""


def test_in_process_worker_and_tcp_worker_share_one_broker():
    server_ctx, peer_ctx = zmq.Context(), zmq.Context()
    try:
        broker = Broker("tcp://127.0.0.1:0", heartbeat_interval=HB, heartbeat_liveness=10, context=server_ctx)
        assert broker.local_endpoint.startswith("inproc://") and broker.context is server_ctx
        local = Worker(broker.local_endpoint, "local", per_request(echo), heartbeat_interval=HB,
                       heartbeat_liveness=10, context=broker.context)
        remote = Worker(broker.endpoint, "remote", per_request(lambda body: [b"remote:" + bytes(body[0])]),
                        heartbeat_interval=HB, heartbeat_liveness=10, context=peer_ctx)
        payload = np.random.default_rng(0).bytes(1 << 20)
        with running(broker, local, remote):
            with client(broker.endpoint, peer_ctx) as c:
                c.wait_for_service("local", 10)
                c.wait_for_service("remote", 10)
                assert c.services() == ["local", "remote"]
                assert c.request("local", [payload, b"second frame"]) == [payload, b"second frame"]
                assert c.request("remote", [b"x"]) == [b"remote:x"]
                replies = dict(c.map("local", ((i, [b"%d" % i]) for i in range(50)), max_in_flight=8))
                stats = c.stats("local")["services"]["local"]
        assert replies == {i: [b"%d" % i] for i in range(50)}
        assert stats["served"] == 51 and stats["workers"] == 1 and stats["errors"] == 0
    finally:
        server_ctx.destroy(linger=0)
        peer_ctx.destroy(linger=0)


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
