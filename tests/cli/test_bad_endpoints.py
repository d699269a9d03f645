"""Bad endpoints and ports in use: exit 1 with a message naming the endpoint, no traceback (issue 16, item 8)."""

from __future__ import annotations

import pytest
import zmq
from conftest import data_path

from tpcflow.cli.main import main


@pytest.mark.parametrize("argv", [
    ["broker", "--bind", "notaurl"],
    ["services", "--broker", "tcp://127.0.0.1"],
    ["submit", "--broker", "localhost:5555", "-o", "OUT", "IN.h5"],
    ["worker", "--broker", "notaurl", "--module", "MODULE"],
])
def test_bad_endpoints_exit_1_naming_the_endpoint(argv, tmp_path, capsys):
    module = tmp_path / "m.py"
    module.write_text("def process_net(images):\n    return images\n")
    argv = [str(module) if a == "MODULE" else str(tmp_path / "o.h5") if a == "OUT" else a for a in argv]
    argv = [str(data_path("larcv3/cosmic_tagging_light.h5")) if a == "IN.h5" else a for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "is not a ZeroMQ endpoint" in err and "tcp://HOST:PORT" in err and "Traceback" not in err
    assert not list(tmp_path.glob("o.h5*"))  # submit left nothing behind


def test_port_in_use_is_a_clear_error(capsys):
    ctx = zmq.Context()
    holder = ctx.socket(zmq.ROUTER)  # another process's broker, say
    try:
        holder.bind("tcp://127.0.0.1:*")
        endpoint = holder.getsockopt_string(zmq.LAST_ENDPOINT)
        assert main(["broker", "--bind", endpoint]) == 1
        err = capsys.readouterr().err
        assert f"cannot bind the broker to {endpoint}" in err and "Traceback" not in err
    finally:
        holder.close(0)
        ctx.term()
