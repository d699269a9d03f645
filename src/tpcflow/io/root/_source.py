"""Open ROOT files from local paths, HTTP(S) and XRootD URLs, with retries for remote ones.

uproot 5 reads remote files through fsspec (``uproot.source.fsspec.FSSpecSource``);
``root://`` URLs additionally need the ``fsspec-xrootd`` plugin.
"""

from __future__ import annotations

import time
from pathlib import Path

from tpcflow.errors import DataFormatError, TpcflowError
from tpcflow.io._extras import require

__all__ = ["RemoteSourceError", "is_network_error", "is_remote", "open_root", "source_name"]

_REMOTE_SCHEMES = ("http://", "https://", "root://", "xroot://")


class RemoteSourceError(TpcflowError, OSError):
    """A remote ROOT file could not be reached after all retries.

    Parameters
    ----------
    url : str
        The URL that failed.
    attempts : int
        How many times it was tried.
    reason : str
        The last low-level error, in one line.
    """

    def __init__(self, url: str, attempts: int, reason: str):
        self.url = url
        self.attempts = attempts
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        return (
            f"cannot reach remote ROOT file {self.url!r} after {self.attempts} attempt(s): {self.reason}\n"
            "check the URL, the server and the network (or a proxy), then retry"
        )


def is_remote(source: str | Path) -> bool:
    """Return True if ``source`` is an HTTP(S) or XRootD URL."""
    return isinstance(source, str) and source.lower().startswith(_REMOTE_SCHEMES)


_NET_WORDS = ("ClientConnector", "ClientOS", "ServerDisconnected", "ClientPayload", "XRootD", "Timeout",
              "Connection refused", "Connect call failed")


def is_network_error(err: BaseException) -> bool:
    """Whether ``err`` looks like a transient network failure (worth a retry), not a missing file.

    Looks at the exception, its cause/context chain, and its text: uproot sometimes wraps an
    aiohttp error in an unrelated TypeError ("'ClientConnectorError' object is not subscriptable").
    """
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, FileNotFoundError):
            return False
        if isinstance(err, (OSError, TimeoutError, ConnectionError)):
            return True
        text = f"{type(err).__name__}: {err}"
        if any(word in text for word in _NET_WORDS):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def source_name(source: str | Path) -> str:
    """Return the string form of a local path or URL, for messages and specs."""
    return str(source) if is_remote(source) else str(Path(source))


def open_root(source: str | Path, *, retries: int = 3, timeout: float = 30.0, backoff: float = 0.5):
    """Open a ROOT file with uproot.

    Parameters
    ----------
    source : str or Path
        A local path, an ``http(s)://`` URL (the server must honour HTTP Range requests)
        or a ``root://`` XRootD URL.
    retries : int
        Extra attempts for a remote source whose connection fails (default 3); the delay
        doubles from ``backoff`` seconds and is capped at 4 s, so the total wait is bounded.
    timeout : float
        Per-request timeout for remote sources [s].

    Returns
    -------
    uproot.ReadOnlyDirectory
        The open file (``array_cache=None``: arrays are not kept after reading).

    Raises
    ------
    DataFormatError
        If a local file is missing or is not a ROOT file.
    RemoteSourceError
        If a remote source cannot be reached after ``retries`` extra attempts.
    ModuleNotFoundError
        For ``root://`` URLs when ``fsspec-xrootd`` is not installed (install hint included).
    """
    import uproot  # imported here: it takes about a second
    if not is_remote(source):
        path = Path(source)
        if not path.is_file():
            raise DataFormatError("ROOT file does not exist", file_path=path)
        try:
            return uproot.open(path, array_cache=None)
        except (ValueError, OSError) as err:
            raise DataFormatError(f"cannot open as a ROOT file: {err}", file_path=path) from err
    if source.lower().startswith(("root://", "xroot://")):
        require("fsspec_xrootd")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, but got retries={retries}")
    delay = backoff
    last = ""
    for attempt in range(retries + 1):
        try:
            return uproot.open(source, array_cache=None, timeout=timeout)
        except FileNotFoundError as err:
            raise DataFormatError(f"remote ROOT file not found (HTTP 404 or missing path): {err}",
                                  file_path=source) from err
        except Exception as err:
            if not is_network_error(err):
                raise
            last = f"{type(err).__name__}: {err}".splitlines()[0]
        if attempt < retries:
            time.sleep(delay)
            delay = min(delay * 2, 4.0)
    raise RemoteSourceError(source, retries + 1, last)
