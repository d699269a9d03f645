"""Exception hierarchy of tpcflow.

Every error a user can provoke with bad input subclasses :class:`TpcflowError`
and a builtin (``KeyError``, ``ValueError``, ``OSError``...), so that callers may
catch either.  Errors store their context as fields and render it in
``__str__`` following the house template::

    <what>: <value!r> <why/expected>
    Available: <closest names>
    in file <path>
    in object <group path>
    at entry <i>
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "ConfigError",
    "DataFormatError",
    "EntryOutOfRangeError",
    "OutputError",
    "ProductNotFoundError",
    "ProtocolError",
    "ServiceError",
    "TpcflowError",
    "context_lines",
]


def closest(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Return up to ``n`` candidates sorted by similarity to ``name``."""
    cands = sorted(set(candidates))
    best = difflib.get_close_matches(name, cands, n=n, cutoff=0.0)
    return best or cands[:n]


def context_lines(
    *,
    file_path: object = None,
    object_path: str | None = None,
    entry: int | None = None,
    field: str | None = None,
) -> str:
    """Render the ``in file / in object / at entry / field`` trailer of a message."""
    parts = []
    if file_path is not None:
        parts.append(f"in file {file_path}")
    if object_path is not None:
        parts.append(f"in object {object_path}")
    if entry is not None:
        parts.append(f"at entry {entry}")
    if field is not None:
        parts.append(f"field {field!r}")
    return ("\n" + "\n".join(parts)) if parts else ""


class TpcflowError(Exception):
    """Base class of every tpcflow error."""


class ConfigError(TpcflowError, ValueError):
    """A configuration key or value is unknown or invalid."""


class DataFormatError(TpcflowError, ValueError):
    """A file is missing, unreadable, truncated, or violates its format.

    Parameters
    ----------
    what : str
        What is wrong, in one sentence.
    file_path, object_path, entry, field
        Where it is wrong; each is optional.
    """

    def __init__(self, what: str, *, file_path=None, object_path=None, entry=None, field=None):
        self.what = what
        self.file_path = file_path
        self.object_path = object_path
        self.entry = entry
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        return self.what + context_lines(
            file_path=self.file_path, object_path=self.object_path, entry=self.entry, field=self.field
        )


class ProductNotFoundError(TpcflowError, KeyError):
    """A product (``<type>_<producer>``) or branch is not in the file.

    The message lists the closest available names.
    """

    def __init__(self, product: str, *, available: Iterable[str] = (), file_path=None, object_path=None):
        self.product = product
        self.available = sorted(set(available))
        self.file_path = file_path
        self.object_path = object_path
        super().__init__(product)

    def __str__(self) -> str:
        msg = f"not found: {self.product!r}"
        if self.available:
            msg += "\nAvailable: " + ", ".join(repr(a) for a in closest(self.product, self.available))
        return msg + context_lines(file_path=self.file_path, object_path=self.object_path)


class EntryOutOfRangeError(TpcflowError, IndexError):
    """An entry index is outside ``[0, entries)``."""

    def __init__(self, entry: int, entries: int, *, file_path=None):
        self.entry = entry
        self.entries = entries
        self.file_path = file_path
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"entry {self.entry} is out of range: the dataset has {self.entries} entries" + context_lines(
            file_path=self.file_path
        )


class OutputError(TpcflowError, OSError):
    """An output file or folder cannot be written: permissions, a file in the way, a full disk."""


class ProtocolError(TpcflowError, ValueError):
    """A network message violates its protocol (MDP/0.2, tensor codec, HTTP body)."""


class ServiceError(TpcflowError, RuntimeError):
    """A remote service failed, timed out, or is unknown."""


class ServiceUnavailableError(ServiceError):
    """The broker or the service cannot be reached: no reply within the deadline, or no worker (404).

    Not raised for an error reply about the request itself (which another server would give too):
    this is the case where ``tpcflow submit --fallback local`` runs the model in-process.
    """
