"""``tpcflow services``: a broker's services and statistics from MMI."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import zmq

sys.path.insert(0, str(Path(__file__).parent))
from mdp_helpers import client, echo, free_port, make_stack, running  # noqa: E402

from tpcflow.cli.main import main  # noqa: E402
from tpcflow.serve.mdp.batching import per_request  # noqa: E402


def test_services_table_and_json(capsys):
    ctx = zmq.Context()
    try:
        broker, workers = make_stack(ctx, n_workers=2)
        broker.add_local_worker("local", per_request(echo), slots=3)
        with running(broker, *workers):
            with client(broker.endpoint, ctx) as c:
                c.wait_for_service("echo", 10)
                assert c.request("echo", [b"x"]) == [b"x"]
                end = time.monotonic() + 10
                while c.stats("echo")["services"]["echo"]["workers"] < 2:
                    assert time.monotonic() < end, "the second worker did not register"
                    time.sleep(0.02)
            assert main(["services", "--broker", broker.endpoint]) == 0
            table = capsys.readouterr().out.splitlines()
            assert main(["services", "--broker", broker.endpoint, "--json", "local"]) == 0
            only_local = json.loads(capsys.readouterr().out)
    finally:
        ctx.destroy(linger=0)
    header = table[0].split()
    rows = {line.split()[0]: dict(zip(header, line.split())) for line in table[1:]}
    assert header[:4] == ["service", "slots", "idle", "busy"]
    assert set(rows) == {"echo", "local"}
    assert rows["echo"]["slots"] == "2" and rows["echo"]["served"] == "1" and rows["echo"]["errors"] == "0"
    assert rows["local"]["slots"] == "3" and rows["local"]["idle"] == "3"
    assert list(only_local["services"]) == ["local"] and only_local["broker"]["messages"] >= 1


def test_services_without_a_broker_fails_fast_and_clearly(capsys):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    t = time.monotonic()
    assert main(["services", "--broker", endpoint, "--timeout", "0.5"]) == 1
    assert time.monotonic() - t < 5
    err = capsys.readouterr().err
    assert "tpcflow services: error:" in err and "no reply within 0.5 s" in err and endpoint in err
