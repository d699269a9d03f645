"""CurveZMQ: only peers with allowed keys reach services or register as workers."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest
import zmq

sys.path.insert(0, str(Path(__file__).parent))
from mdp_helpers import HB, echo, running  # noqa: E402

from tpcflow.errors import ConfigError, ServiceError  # noqa: E402
from tpcflow.serve.mdp import Broker, Client, Worker  # noqa: E402
from tpcflow.serve.mdp.batching import per_request  # noqa: E402
from tpcflow.serve.mdp.curve import CurveClient, CurveServer, generate_keys  # noqa: E402


@pytest.fixture
def keys(tmp_path):
    out = {name: generate_keys(tmp_path / "keys", name) for name in ("broker", "worker", "client", "intruder")}
    allowed = tmp_path / "allowed"
    workers = tmp_path / "workers"
    allowed.mkdir()
    workers.mkdir()
    for name in ("worker", "client"):
        shutil.copy(out[name][0], allowed)
    shutil.copy(out["worker"][0], workers)
    return out, allowed, workers


@pytest.fixture
def curve_broker(keys):
    """A CURVE broker admitting the "client" and "worker" keys (only "worker" may serve), and a peer context."""
    k, allowed, worker_dir = keys
    server_ctx, peer_ctx = zmq.Context(), zmq.Context()
    curve = CurveServer(k["broker"][1], allowed, worker_dir=worker_dir, context=server_ctx)
    broker = Broker("tcp://127.0.0.1:0", heartbeat_interval=HB, heartbeat_liveness=10, context=server_ctx, curve=curve)
    yield broker, peer_ctx
    server_ctx.destroy(linger=0)
    peer_ctx.destroy(linger=0)


def test_curve_broker_admits_only_allowed_keys(keys, curve_broker):
    k = keys[0]
    broker, peer_ctx = curve_broker
    as_ = {name: CurveClient(k[name][1], k["broker"][0]) for name in ("worker", "client", "intruder")}
    good = Worker(broker.endpoint, "echo", per_request(echo), heartbeat_interval=HB, context=peer_ctx,
                  curve=as_["worker"])
    plain_worker = Worker(broker.endpoint, "plain", per_request(echo), heartbeat_interval=HB, context=peer_ctx)
    client_as_worker = Worker(broker.endpoint, "sneaky", per_request(echo), heartbeat_interval=HB,
                              context=peer_ctx, curve=as_["client"])
    with running(broker, good, plain_worker, client_as_worker):
        with Client(broker.endpoint, timeout=5, context=peer_ctx, curve=as_["client"]) as c:
            c.wait_for_service("echo", 10)
            assert c.request("echo", [b"secret"]) == [b"secret"]
            time.sleep(4 * HB)
            # neither a worker without keys nor a client key (not in the worker list) may register
            assert c.services() == ["echo"]
            assert broker.counters["refused_workers"] >= 1
        for curve_client in (None, as_["intruder"]):
            with Client(broker.endpoint, timeout=0.5, retries=0, context=peer_ctx, curve=curve_client) as bad:
                t = time.monotonic()
                with pytest.raises(ServiceError, match="no reply within"):
                    bad.request("echo", [b"let me in"])
                assert time.monotonic() - t < 3


def test_key_file_errors_are_clear(tmp_path, keys):
    k, allowed, _ = keys
    with pytest.raises(ConfigError, match="does not exist"):
        CurveClient(tmp_path / "nope.key_secret", k["broker"][0])
    with pytest.raises(ConfigError, match="no secret key"):
        CurveClient(k["client"][0], k["broker"][0])  # the public file given as the secret
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="holds no"):
        CurveServer(k["broker"][1], empty)


def test_broker_cli_with_curve_flags(keys):
    import subprocess

    from mdp_helpers import free_port

    k, allowed, worker_dir = keys
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "tpcflow.cli.main", "broker", "--bind", endpoint,
                             "--heartbeat-interval", str(HB), "--curve-secret", str(k["broker"][1]),
                             "--curve-allowed", str(allowed), "--curve-workers", str(worker_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = zmq.Context()
    try:
        worker = Worker(endpoint, "echo", per_request(echo), heartbeat_interval=HB, heartbeat_liveness=10,
                        context=ctx, curve=CurveClient(k["worker"][1], k["broker"][0]))
        with running(worker):
            with Client(endpoint, timeout=5, context=ctx, curve=CurveClient(k["client"][1], k["broker"][0])) as c:
                c.wait_for_service("echo", 30)
                assert c.request("echo", [b"over curve"]) == [b"over curve"]
            with Client(endpoint, timeout=0.5, retries=0, context=ctx) as plain:
                with pytest.raises(ServiceError, match="no reply within"):
                    plain.request("echo", [b"plain text"])
    finally:
        proc.kill()
        proc.wait(10)
        ctx.destroy(linger=0)


def test_curve_broker_hosts_an_in_process_worker_without_keys(keys, curve_broker):
    """A local worker is not on the network: it needs no keys; TCP peers still do."""
    k = keys[0]
    broker, peer_ctx = curve_broker
    broker.add_local_worker("local", per_request(echo))
    with running(broker):
        with Client(broker.endpoint, timeout=5, context=peer_ctx,
                    curve=CurveClient(k["client"][1], k["broker"][0])) as c:
            c.wait_for_service("local", 10)
            assert c.request("local", [b"over curve"]) == [b"over curve"]
        with Client(broker.endpoint, timeout=0.5, retries=0, context=peer_ctx) as plain:
            with pytest.raises(ServiceError, match="no reply within"):
                plain.request("local", [b"plain text"])


def test_a_refused_worker_gives_up_with_a_clear_error_and_the_broker_logs_it_once(keys, curve_broker, caplog):
    """A worker whose key may not serve stops after max_refusals instead of retrying forever looking healthy."""
    import logging

    k = keys[0]
    broker, peer_ctx = curve_broker
    refused = Worker(broker.endpoint, "sneaky", per_request(echo), heartbeat_interval=HB, context=peer_ctx,
                     curve=CurveClient(k["client"][1], k["broker"][0]), max_refusals=3, slots=2)
    caplog.set_level(logging.WARNING, logger="tpcflow.serve.mdp.broker_state")
    with running(broker):
        thread = refused.start()
        thread.join(15 * HB + 10)
        assert not thread.is_alive(), "the refused worker kept retrying"
    assert isinstance(refused.error, ConfigError)
    assert "refused to register" in str(refused.error) and "docs/security.md" in str(refused.error)
    assert broker.counters["refused_workers"] >= 3
    assert sum("refused READY" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("case", ["unknown key", "plain broker"])
def test_a_worker_whose_handshake_fails_gives_up_with_the_reason(keys, curve_broker, case):
    """A key the broker's authenticator does not know, or a broker without CURVE: libzmq drops the
    connection without a word to the application; the worker watches its handshake, says why, and stops."""
    k = keys[0]
    broker, peer_ctx = curve_broker
    if case == "plain broker":
        broker = Broker("tcp://127.0.0.1:0", heartbeat_interval=HB, context=peer_ctx)
    secret = k["intruder"][1] if case == "unknown key" else k["worker"][1]
    worker = Worker(broker.endpoint, "echo", per_request(echo), heartbeat_interval=HB, context=peer_ctx,
                    curve=CurveClient(secret, k["broker"][0]), max_refusals=3, slots=2)
    with running(broker):
        thread = worker.start()
        thread.join(15 * HB + 10)
        alive = thread.is_alive()
        worker.stop()
    assert not alive, "the worker kept retrying"
    assert isinstance(worker.error, ConfigError)
    expected = "allowed keys folder" if case == "unknown key" else "does not speak CurveZMQ"
    assert expected in str(worker.error), str(worker.error)
