"""MDP/0.2 wire constants and message validation (ZeroMQ RFC 18, as spoken by majortomo 0.2.0).

Framing, as seen by the broker's ROUTER socket (``ID`` is the identity frame ZeroMQ prepends):

===========================  =============================================================
client -> broker  REQUEST    ``ID, b"", "MDPC02", 0x02, service, body...``
broker -> client  PARTIAL    ``ID, b"", "MDPC02", 0x03, body...``
broker -> client  FINAL      ``ID, b"", "MDPC02", 0x04, body...``
worker -> broker  READY      ``ID, b"", "MDPW02", 0x01, service``
broker -> worker  REQUEST    ``ID, b"", "MDPW02", 0x02, client, b"", body...``
worker -> broker  PARTIAL    ``ID, b"", "MDPW02", 0x03, client, b"", body...``
worker -> broker  FINAL      ``ID, b"", "MDPW02", 0x04, client, b"", body...``
either way        HEARTBEAT  ``ID, b"", "MDPW02", 0x05``
either way        DISCONNECT ``ID, b"", "MDPW02", 0x06``
===========================  =============================================================

Source: ZeroMQ RFC 18 (MDP/0.2) and majortomo 0.2.0 (``majortomo/protocol.py``, ``broker.py``).
majortomo keeps MDP/0.1's empty delimiter frame, numbers the client commands like the worker
commands and omits the service name from client replies; our client and worker speak exactly that
dialect so that they interoperate with majortomo's broker and vice versa. Our broker also accepts
peers framed as in the RFC 18 text (no delimiter; client REQUEST=0x01, PARTIAL=0x02, FINAL=0x03,
service name before the reply body) and answers each peer in its own framing.

tpcflow extensions, carried inside the opaque body so majortomo peers pass them through:

* request id: an optional first body frame :data:`RID_PREFIX` + 8-byte big-endian uint64. Our
  broker strips it before the worker and puts it back in front of the reply, so a client with many
  requests in flight can match replies and drop duplicates (after a re-dispatch or a retry).
* error reply: body ``[ERROR_MARK, code, message]`` (code is ASCII digits, e.g. ``b"404"``).
* MMI (ZeroMQ RFC 8): services ``mmi.service`` (200/404), ``mmi.services`` (JSON list),
  ``mmi.stats`` (JSON per-service statistics); any other ``mmi.*`` answers 501.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from tpcflow.errors import ProtocolError

__all__ = [
    "CLIENT_HEADER",
    "DISCONNECT",
    "ERROR_MARK",
    "FINAL",
    "HEARTBEAT",
    "MAX_SERVICE_NAME",
    "NOBLOCK",
    "PARTIAL",
    "READY",
    "REQUEST",
    "RID_PREFIX",
    "WORKER_HEADER",
    "Inbound",
    "check_endpoint",
    "error_body",
    "frame_bytes",
    "pack_rid",
    "parse_error",
    "parse_inbound",
    "recv_frames",
    "send_frames",
    "split_rid",
    "validate_service_name",
]

WORKER_HEADER = b"MDPW02"
CLIENT_HEADER = b"MDPC02"

READY = b"\x01"
REQUEST = b"\x02"
PARTIAL = b"\x03"
FINAL = b"\x04"
HEARTBEAT = b"\x05"
DISCONNECT = b"\x06"

#: client command numbers of the RFC 18 text (majortomo numbers them like the worker commands)
RFC_REQUEST = b"\x01"
RFC_PARTIAL = b"\x02"
RFC_FINAL = b"\x03"

COMMAND_NAMES = {
    READY: "READY",
    REQUEST: "REQUEST",
    PARTIAL: "PARTIAL",
    FINAL: "FINAL",
    HEARTBEAT: "HEARTBEAT",
    DISCONNECT: "DISCONNECT",
}

#: first bytes of a request-id frame (followed by a big-endian uint64)
RID_PREFIX = b"\x00tpcRID"
RID_LEN = len(RID_PREFIX) + 8
#: first frame of an error reply body
ERROR_MARK = b"\x00tpcERR"
MAX_SERVICE_NAME = 255
_RID = struct.Struct(">Q")
_SERVICE_NAME = re.compile(rb"[\x21-\x7e]{1,%d}" % MAX_SERVICE_NAME)


_SNDMORE = 2  # ZMQ_SNDMORE; plain ints avoid pyzmq's enum arithmetic on the hot path
NOBLOCK = 1  # ZMQ_DONTWAIT


def send_frames(sock, frames: list, flags: int = 0, copy: bool = False) -> None:
    """Send a multipart message (about 2x faster than ``send_multipart`` for small frames).

    ``copy=False`` sends large buffers (``zmq.Frame``, memoryview) without copying; pyzmq still
    copies frames below its copy threshold, which is cheaper for them. With ``flags`` =
    ``zmq.NOBLOCK`` the first part may raise ``zmq.Again``; the rest then never block.
    """
    send = sock.send
    last = len(frames) - 1
    for i, f in enumerate(frames):
        if i == 0:
            send(f, (flags | _SNDMORE) if last else flags, copy=copy)
        else:
            send(f, _SNDMORE if i < last else 0, copy=copy)


def recv_frames(sock, flags: int = 0) -> list:
    """Receive a multipart message as zero-copy ``zmq.Frame`` objects (``zmq.Again`` if NOBLOCK)."""
    recv = sock.recv
    f = recv(flags, copy=False)
    parts = [f]
    while f.more:
        f = recv(0, copy=False)
        parts.append(f)
    return parts


def frame_bytes(frame) -> bytes:
    """Return the bytes of a frame received with ``copy=False`` (``zmq.Frame``) or with copy."""
    return frame if isinstance(frame, bytes) else frame.bytes


def _len(frame) -> int:
    return len(frame) if isinstance(frame, (bytes, bytearray)) else len(frame.buffer)


def pack_rid(rid: int) -> bytes:
    """Return the request-id frame for ``rid`` (0 <= rid < 2**64)."""
    return RID_PREFIX + _RID.pack(rid)


def split_rid(body: list) -> tuple[int | None, list]:
    """Split an optional leading request-id frame off ``body``; return ``(rid or None, rest)``."""
    if body and _len(body[0]) == RID_LEN:
        first = frame_bytes(body[0])
        if first.startswith(RID_PREFIX):
            return _RID.unpack_from(first, len(RID_PREFIX))[0], body[1:]
    return None, body


def error_body(code: int, message: str) -> list[bytes]:
    """Return the body frames of an error reply: ``[ERROR_MARK, b"<code>", utf-8 message]``."""
    return [ERROR_MARK, str(int(code)).encode(), message.encode("utf-8", "replace")]


def parse_error(body: list) -> tuple[int, str] | None:
    """Return ``(code, message)`` if ``body`` is an error reply, else None."""
    if len(body) >= 3 and _len(body[0]) == len(ERROR_MARK) and frame_bytes(body[0]) == ERROR_MARK:
        try:
            code = int(frame_bytes(body[1]).decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            code = 500
        return code, frame_bytes(body[2]).decode("utf-8", "replace")
    return None


def validate_service_name(name) -> bytes:
    """Return ``name`` as bytes if it is a printable ASCII string of 1-255 characters.

    Raises
    ------
    ProtocolError
        If the name is empty, too long, or not printable ASCII (RFC 18: "printable string").
    """
    raw = name.encode("utf-8", "replace") if isinstance(name, str) else frame_bytes(name)
    if _SERVICE_NAME.fullmatch(raw) is None:
        raise ProtocolError(f"service name: {raw[:40]!r} must be 1-{MAX_SERVICE_NAME} printable ASCII characters")
    return raw


_ENDPOINT = re.compile(r"^(tcp://(\*|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\*|0|[1-9][0-9]{0,4})|ipc://.+|inproc://.+)$")


def check_endpoint(endpoint, what: str = "endpoint") -> str:
    """Return ``endpoint`` if it is a ZeroMQ ``tcp://host:port``, ``ipc://path`` or ``inproc://name``.

    Raises
    ------
    ConfigError
        Naming the option and an example, instead of ZeroMQ's "Invalid argument" later (or a
        worker thread that dies while its process exits 0).
    """
    from tpcflow.errors import ConfigError

    if not isinstance(endpoint, str) or not _ENDPOINT.match(endpoint):
        raise ConfigError(f"{what}: {endpoint!r} is not a ZeroMQ endpoint; use tcp://HOST:PORT "
                          "(e.g. tcp://127.0.0.1:5555), ipc://PATH or inproc://NAME")
    return endpoint


@dataclass
class Inbound:
    """A validated message arriving at the broker.

    Attributes
    ----------
    sender : bytes
        ZeroMQ identity of the peer.
    header : bytes
        :data:`CLIENT_HEADER` or :data:`WORKER_HEADER`.
    command : bytes
        One of the command bytes.
    service : bytes or None
        Service name (client REQUEST, worker READY).
    client : bytes or None
        Client address (worker PARTIAL / FINAL).
    body : list
        Body frames (``zmq.Frame`` or bytes), untouched.
    rfc : bool
        The peer uses the RFC 18 text framing (no empty delimiter; client commands numbered
        REQUEST=1, PARTIAL=2, FINAL=3, service name in replies); replies use the same framing.
    """

    sender: bytes
    header: bytes
    command: bytes
    service: bytes | None = None
    client: bytes | None = None
    body: list | None = None
    rfc: bool = False


def parse_inbound(frames: list) -> Inbound:
    """Validate a multipart message received by the broker's ROUTER socket.

    Parameters
    ----------
    frames : list of bytes or zmq.Frame
        As returned by ``recv_multipart`` (identity first).

    Returns
    -------
    Inbound

    Raises
    ------
    ProtocolError
        For any violation of the framing table in the module docstring; the message names the
        frame and what was expected.
    """
    n = len(frames)
    if n < 3:
        raise ProtocolError(f"message: {n} frames, expected at least 3 (identity, header, command)")
    sender = frame_bytes(frames[0])
    # majortomo dialect: identity, b"", header, command...; RFC 18 text: identity, header, command...
    rfc = _len(frames[1]) == 6
    if not rfc and _len(frames[1]) != 0:
        raise ProtocolError(f"frame 1: {_len(frames[1])} bytes, expected the empty delimiter or a protocol header")
    first = 1 if rfc else 2
    if n < first + 2 or _len(frames[first]) != 6 or _len(frames[first + 1]) != 1:
        raise ProtocolError("expected a 6-byte protocol header and a 1-byte command")
    header = frame_bytes(frames[first])
    command = frame_bytes(frames[first + 1])
    rest = frames[first + 2:]
    if rfc and header == CLIENT_HEADER:
        if command != RFC_REQUEST:
            raise ProtocolError(f"client command: {command!r}, expected REQUEST (0x01, RFC 18 numbering)")
        command = REQUEST
    if header == CLIENT_HEADER:
        if command != REQUEST:
            raise ProtocolError(f"client command: {command!r}, expected REQUEST (0x02)")
        if not rest:
            raise ProtocolError("client REQUEST: missing the service name frame")
        return Inbound(sender, header, command, service=validate_service_name(rest[0]), body=rest[1:], rfc=rfc)
    if header != WORKER_HEADER:
        raise ProtocolError(f"protocol header: {header!r}, expected b'MDPC02' or b'MDPW02'")
    if command == READY:
        if len(rest) < 1:
            raise ProtocolError("worker READY: missing the service name frame")
        return Inbound(sender, header, command, service=validate_service_name(rest[0]), rfc=rfc)
    if command in (PARTIAL, FINAL):
        if len(rest) < 2 or _len(rest[1]) != 0:
            raise ProtocolError(
                f"worker {COMMAND_NAMES[command]}: expected client address and an empty delimiter frame"
            )
        return Inbound(sender, header, command, client=frame_bytes(rest[0]), body=rest[2:], rfc=rfc)
    if command in (HEARTBEAT, DISCONNECT):
        return Inbound(sender, header, command, rfc=rfc)
    raise ProtocolError(f"worker command: {command!r}, expected READY, PARTIAL, FINAL, HEARTBEAT or DISCONNECT")
