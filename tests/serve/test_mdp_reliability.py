"""Reliability on 127.0.0.1 with real processes: kill -9 a busy worker, restart the broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from mdp_helpers import HB, client, echo, free_port, running, small_event  # noqa: E402

from tpcflow.serve.mdp import Broker, Worker  # noqa: E402
from tpcflow.serve.mdp.batching import per_request  # noqa: E402
from tpcflow.serve.mdp.cosmic import decode_reply, encode_request  # noqa: E402

SLOW_MODULE = """
import os, time
import numpy as np

def process_net(images):
    open(os.path.join(os.environ["MARK_DIR"], str(os.getpid())), "w").close()
    time.sleep(float(os.environ.get("SLEEP", "1.0")))
    return (images > 0.5).astype(np.int64)
"""


def _tpcflow(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tpcflow.cli.main", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def _wait(cond, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_kill9_busy_worker_request_completes_on_another(ctx, tmp_path):
    module = tmp_path / "slow.py"
    module.write_text(SLOW_MODULE)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "MARK_DIR": str(marks), "SLEEP": "1.0"}
    # busy_worker_timeout: the victim may be killed before its first heartbeat while busy
    broker = Broker("tcp://127.0.0.1:0", heartbeat_interval=HB, heartbeat_liveness=5, busy_worker_timeout=3.0,
                    context=ctx)
    procs = []
    with running(broker):
        try:
            with client(broker.endpoint, ctx, timeout=20) as c:
                workers = lambda: c.stats().get("services", {}).get("slow", {}).get("workers", 0)  # noqa: E731
                for n in (1, 2):  # the first to register is the least recently used: it gets the request
                    procs.append(_tpcflow("worker", "--broker", broker.endpoint, "--service", "slow", "--module",
                                          str(module), "--max-batch", "1", "--slots", "1", "--heartbeat-interval",
                                          str(HB), "--heartbeat-liveness", "5", env=env))
                    _wait(lambda: workers() == n, 30, f"{n} worker(s) to register")
                planes = small_event(1)
                t0 = time.monotonic()
                rid = c.send("slow", encode_request((1, 2, 3), planes))
                _wait(lambda: any(marks.iterdir()), 10, "the first worker to start processing")
                victim = int(next(marks.iterdir()).name)
                assert victim == procs[0].pid
                os.kill(victim, signal.SIGKILL)
                key, reply = c.recv(timeout=20)
                elapsed = time.monotonic() - t0
                stats = c.stats("slow")["services"]["slow"]
        finally:
            _stop(procs)
    assert key == rid
    eid, labels, scores = decode_reply(reply)
    assert eid == (1, 2, 3)
    for p, lab in zip(planes, labels):
        np.testing.assert_array_equal(lab, (p.values > 0.5).astype(np.uint8))
    assert {int(m.name) for m in marks.iterdir()} == {procs[0].pid, procs[1].pid}
    assert stats["redispatched"] >= 1 and stats["served"] >= 1 and stats["workers"] == 1
    assert elapsed < 15


def test_broker_restart_workers_register_again(ctx):
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    args = ("broker", "--bind", endpoint, "--heartbeat-interval", str(HB), "--heartbeat-liveness", "3")
    worker = Worker(endpoint, "echo", per_request(echo), max_batch=2, heartbeat_interval=HB, heartbeat_liveness=3,
                    reconnect_max=0.5, context=ctx)
    procs = [_tpcflow(*args)]
    try:
        with running(worker):
            with client(endpoint, ctx, timeout=2, retries=5) as c:
                c.wait_for_service("echo", 30)
                assert c.request("echo", [b"before"]) == [b"before"]
                first = worker.registrations
                procs[0].send_signal(signal.SIGKILL)
                procs[0].wait(10)
                procs.append(_tpcflow(*args))
                c.wait_for_service("echo", 30)
                assert c.request("echo", [b"after"]) == [b"after"]
                replies = dict(c.map("echo", ((i, [b"%d" % i]) for i in range(20)), max_in_flight=5))
            assert replies == {i: [b"%d" % i] for i in range(20)}
            assert worker.registrations > first
    finally:
        _stop(procs)
