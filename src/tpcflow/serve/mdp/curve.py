"""CurveZMQ encryption and authentication for the broker, its workers and its clients.

Keys are the ZeroMQ certificate files written by :func:`zmq.auth.create_certificates`
(``NAME.key`` public, ``NAME.key_secret`` secret, Z85 text). The broker authenticates peers with
a ZAP handler (:class:`zmq.auth.thread.ThreadAuthenticator`) that accepts only the public keys
found in an "allowed" directory; optionally a second directory restricts which of them may
register as workers. Without valid keys a peer never completes the CURVE handshake, so it can
neither register as a worker nor reach a service. See ``docs/security.md``.

Source: ZeroMQ RFC 26 (CurveZMQ), RFC 27 (ZAP); pyzmq ``zmq.auth``.
"""

from __future__ import annotations

import os
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from tpcflow.errors import ConfigError

__all__ = ["CurveClient", "CurveServer", "generate_keys", "load_keypair"]


def generate_keys(directory, name: str) -> tuple[Path, Path]:
    """Write a new key pair ``DIR/NAME.key`` and ``DIR/NAME.key_secret``; return both paths.

    The secret file is made readable by its owner only.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(directory), name)
    os.chmod(secret, 0o600)
    return Path(public), Path(secret)


def load_keypair(path, *, need_secret: bool) -> tuple[bytes, bytes | None]:
    """Read ``(public, secret)`` Z85 keys from a certificate file.

    Raises
    ------
    ConfigError
        If the file is missing or unreadable, or lacks the secret key when ``need_secret``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"CURVE key file: {str(path)!r} does not exist")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (ValueError, OSError) as err:
        raise ConfigError(f"CURVE key file: {str(path)!r} is not a ZeroMQ certificate ({err})") from None
    if need_secret and not secret:
        raise ConfigError(f"CURVE key file: {str(path)!r} has no secret key (use the *.key_secret file)")
    return public, secret


def _public_keys(directory) -> set[str]:
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"CURVE allowed-keys directory: {str(directory)!r} does not exist")
    keys = zmq.auth.load_certificates(str(directory))
    if not keys:
        raise ConfigError(f"CURVE allowed-keys directory: {str(directory)!r} holds no *.key public key file")
    return {k.decode("ascii") for k in keys}


class CurveServer:
    """Server side: the broker's secret key plus the allow-lists, enforced by a ZAP thread.

    Parameters
    ----------
    secret_file : path
        The broker's ``*.key_secret`` file.
    allowed_dir : path
        Directory of public ``*.key`` files of every client and worker allowed to connect.
    worker_dir : path, optional
        Directory of public keys allowed to register as workers (READY); default: any allowed key.
    context : zmq.Context
        The context of the broker socket; it hosts the one ZAP handler of that context.
    """

    def __init__(self, secret_file, allowed_dir, *, worker_dir=None, context: zmq.Context | None = None):
        self.public, self.secret = load_keypair(secret_file, need_secret=True)
        self.allowed_dir = Path(allowed_dir)
        self.allowed = _public_keys(allowed_dir)
        self.worker_keys = _public_keys(worker_dir) if worker_dir is not None else None
        self._ctx = context or zmq.Context.instance()
        self._auth: ThreadAuthenticator | None = None

    def apply(self, socket: zmq.Socket) -> None:
        """Start the ZAP handler (once) and make ``socket`` a CURVE server; call before bind."""
        if self._auth is None:
            self._auth = ThreadAuthenticator(self._ctx)
            self._auth.start()
            self._auth.configure_curve(domain="*", location=str(self.allowed_dir))
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_server = True

    def may_serve(self, user_id: str | None) -> bool:
        """Whether the peer with ZAP ``User-Id`` (its Z85 public key) may register as a worker."""
        if self.worker_keys is None:
            return True
        return user_id is not None and user_id in self.worker_keys

    def stop(self) -> None:
        """Stop the ZAP handler thread."""
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


class CurveClient:
    """Client / worker side: own key pair plus the broker's public key.

    Parameters
    ----------
    secret_file : path
        This peer's ``*.key_secret`` file (its public key must be in the broker's allowed dir).
    server_public_file : path
        The broker's public ``*.key`` file.
    """

    def __init__(self, secret_file, server_public_file):
        self.public, self.secret = load_keypair(secret_file, need_secret=True)
        self.server_public, _ = load_keypair(server_public_file, need_secret=False)

    def apply(self, socket: zmq.Socket) -> None:
        """Make ``socket`` a CURVE client; call before connect."""
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_serverkey = self.server_public
