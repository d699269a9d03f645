"""Issue 17: workers, clients and tpcflow services reach a broker through an ssh tunnel (pyzmq's zmq.ssh),
tested against a real OpenSSH server on 127.0.0.1 with throwaway keys."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from mdp_helpers import HB, echo, running  # noqa: E402

from tpcflow.cli.main import main  # noqa: E402
from tpcflow.errors import ConfigError  # noqa: E402
from tpcflow.serve.mdp import Broker, Client, Worker  # noqa: E402
from tpcflow.serve.mdp.batching import per_request  # noqa: E402
from tpcflow.serve.mdp.ssh import SSHTunnel  # noqa: E402

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)
    return path


@pytest.fixture
def sshd(tmp_path, monkeypatch):
    """An OpenSSH server on 127.0.0.1 that lets this user in with a throwaway key; yields (server, key).

    Its host key is in the known hosts of a scratch home (paramiko reads ``$HOME/.ssh/known_hosts``), as a
    user's would be after the first login: unknown hosts are refused."""
    if SSHD is None or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH server not installed (apt-get install openssh-server)")
    pytest.importorskip("paramiko")
    import pwd

    user = pwd.getpwuid(os.getuid()).pw_name
    key = _keygen(tmp_path / "id_client")
    (tmp_path / "authorized_keys").write_text((tmp_path / "id_client.pub").read_text())
    port = _port()
    config = tmp_path / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {_keygen(tmp_path / 'host_key')}",
        f"PidFile {tmp_path / 'sshd.pid'}", f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}",
        "StrictModes no", "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes", "PermitRootLogin prohibit-password", "AllowTcpForwarding yes",
        "PermitTTY no", "LogLevel ERROR"]) + "\n")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    host_pub = (tmp_path / "host_key.pub").read_text().split()
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    monkeypatch.setenv("HOME", str(home))
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sshd did not start: {proc.stdout.read().decode(errors='replace')}")
            time.sleep(0.1)
        yield f"{user}@127.0.0.1:{port}", key
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_worker_and_clients_reach_the_broker_through_the_ssh_tunnel(ctx, sshd, capsys):
    server, key = sshd
    broker = Broker("tcp://127.0.0.1:0", heartbeat_interval=HB, heartbeat_liveness=30, context=ctx)
    broker.start()
    try:
        tunnel = SSHTunnel(server, keyfile=str(key), paramiko=True)
        worker = Worker(broker.endpoint, "echo", per_request(echo), heartbeat_interval=HB, heartbeat_liveness=30,
                        context=ctx, ssh=tunnel)
        assert worker._endpoint != broker.endpoint  # the worker connects to its end of the tunnel
        with running(worker):
            client_tunnel = SSHTunnel(server, keyfile=str(key), paramiko=True)
            with Client(broker.endpoint, context=ctx, timeout=10, ssh=client_tunnel) as client:
                client.wait_for_service("echo", timeout=20)
                assert client.request("echo", [b"through", b"ssh"]) == [b"through", b"ssh"]
            client_tunnel.close()
            rc = main(["services", "--broker", broker.endpoint, "--json", "--timeout", "10", "--ssh", server,
                       "--ssh-key", str(key), "--ssh-paramiko"])
            assert rc == 0
            stats = json.loads(capsys.readouterr().out)
            assert stats["services"]["echo"]["workers"] == 1 and stats["services"]["echo"]["served"] == 1
        tunnel.close()
    finally:
        broker.stop()


def test_a_key_the_server_refuses_is_an_error_not_a_password_prompt(sshd, tmp_path):
    server, _key = sshd
    stranger = _keygen(tmp_path / "id_stranger")
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="needs a password"):
        SSHTunnel(server, keyfile=str(stranger), paramiko=True).endpoint("tcp://127.0.0.1:5555")
    assert time.monotonic() - t0 < 30
    with pytest.raises(ConfigError, match="not user@host"):
        SSHTunnel("-oProxyCommand=x host")
    assert main(["services", "--ssh-key", str(stranger)]) != 0  # --ssh-key without --ssh
