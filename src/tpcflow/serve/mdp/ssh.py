"""Reaching a broker behind a login node: ZeroMQ connections through an ssh tunnel (pyzmq's ``zmq.ssh``).

``--ssh user@host[:port]`` on ``tpcflow worker``, ``submit`` and ``services`` (and ``ssh=`` on
:class:`~tpcflow.serve.mdp.Client` and :class:`~tpcflow.serve.mdp.Worker`): the broker endpoint
is the address *as seen from that host* (``tcp://127.0.0.1:5555`` for a broker on the login node
itself, ``tcp://node042:5555`` for one on a compute node behind it).  One tunnel is opened per
endpoint (``zmq.ssh.tunnel.open_tunnel``: a local port forwarded by the ``ssh`` command through
pexpect, or by paramiko), and every socket connects to its local end, as ublarcvserver's workers
did with ``zmq.ssh``.

Login is checked first without a password (:func:`zmq.ssh.tunnel.try_passwordless_ssh`): a job
on a compute node has nobody to type one, so a key that does not work is an error, never a
prompt that waits forever.  The ``ssh`` command uses the user's ssh configuration, agent and
known hosts (an unknown host key is refused); ``paramiko=True`` uses paramiko instead, which
accepts an unknown host key with a warning.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from dataclasses import dataclass, field

from tpcflow.errors import ConfigError, ServiceUnavailableError

__all__ = ["SSHTunnel"]


@dataclass
class SSHTunnel:
    """An ssh server to tunnel ZeroMQ connections through.

    Attributes
    ----------
    server : str
        ``user@host[:port]`` (``host`` alone uses the ssh configuration's user).
    keyfile : str or None
        Private key file (``ssh -i``); None: the agent and the default keys.
    paramiko : bool or None
        Use paramiko rather than the ``ssh`` command (None: the ``ssh`` command).
    timeout : int
        Seconds a tunnel waits for its first connection before it closes [s].
    """

    server: str
    keyfile: str | None = None
    paramiko: bool | None = None
    timeout: int = 60
    _local: dict = field(default_factory=dict, init=False, repr=False)
    _tunnels: list = field(default_factory=list, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self):
        if not self.server or self.server.startswith("-") or any(c.isspace() for c in self.server):
            raise ConfigError(f"--ssh: {self.server!r} is not user@host[:port]")
        if self.keyfile is not None and not os.path.isfile(self.keyfile):
            raise ConfigError(f"--ssh-key: {self.keyfile!r} does not exist")

    def endpoint(self, broker: str) -> str:
        """The local endpoint that reaches ``broker`` (as seen from the ssh server); the tunnel opens once.

        Raises
        ------
        ConfigError
            pexpect/paramiko missing, or a login that needs a password.
        ServiceUnavailableError
            The ssh server cannot be reached, or the tunnel does not start.
        """
        with self._lock:
            if broker not in self._local:
                self._local[broker] = self._open(broker)
            return self._local[broker]

    def _open(self, broker: str) -> str:
        try:
            from zmq.ssh import tunnel
        except ImportError as err:  # pragma: no cover - part of pyzmq
            raise ConfigError(f"--ssh needs pyzmq's zmq.ssh: {err}") from None
        use_paramiko = bool(self.paramiko)
        try:
            if not tunnel.try_passwordless_ssh(self.server, self.keyfile, paramiko=use_paramiko):
                raise ConfigError(f"--ssh {self.server}: the login needs a password; tpcflow jobs log in with a key "
                                  "(--ssh-key FILE, or one the ssh agent or ~/.ssh/config offers)")
            local, handle = tunnel.open_tunnel(broker, self.server, keyfile=self.keyfile, paramiko=use_paramiko,
                                               timeout=self.timeout)
        except ImportError:
            raise ConfigError("--ssh needs pexpect (for the ssh command) or paramiko (--ssh-paramiko): "
                              "pip install 'tpcflow[ssh]'") from None
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - ssh's failures come as many types
            raise ServiceUnavailableError(f"ssh tunnel to {broker} through {self.server} failed: "
                                          f"{type(err).__name__}: {err}") from None
        self._tunnels.append(handle)
        return local

    def close(self) -> None:
        """Stop the tunnels this object opened (paramiko processes, ``ssh`` commands)."""
        with self._lock:
            for handle in self._tunnels:
                if isinstance(handle, int):
                    with contextlib.suppress(OSError):
                        os.kill(handle, signal.SIGTERM)
                else:
                    handle.terminate()
                    handle.join(timeout=5)
            self._tunnels.clear()
            self._local.clear()
