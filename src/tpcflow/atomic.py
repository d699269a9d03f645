"""Atomic file writes: the one way tpcflow writes a file that a reader may see.

Every write goes to a hidden temporary file in the destination's folder
(``.<name>.<host>-<pid>.<random>.tmp``), is flushed to disk with ``fsync``, and is renamed onto the
destination with ``os.replace`` (atomic on POSIX and Windows for a same-folder rename); the
folder is then fsynced so that the rename survives a crash.  On any failure, including
``KeyboardInterrupt``, the temporary file is removed and the destination is left as it was.
A process killed outright (``kill -9``, a node crash) cannot clean up: the next write of the
same destination removes the temporary files of this host's processes that no longer exist.

Source: the POSIX ``rename(2)`` guarantee; the fsync-file, rename, fsync-folder sequence is
the one SQLite and git use for durable replacement.
"""

from __future__ import annotations

import errno
import os
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write", "commit", "sweep_stale", "temporary_path", "write_bytes", "write_csv",
           "write_text"]


#: this host in temporary names (8 hex of its name's hash): on a shared file system a sweep only
#: ever judges the processes of its own host
_HOST = uuid.uuid5(uuid.NAMESPACE_DNS, socket.gethostname()).hex[:8]


def temporary_path(path: str | os.PathLike) -> Path:
    """Return a fresh hidden temporary name beside ``path``: ``.<name>.<host>-<pid>.<hex8>.tmp``.

    Unique per process and call, so concurrent writers of one destination never share a file.
    The stale temporary files of the same destination (:func:`sweep_stale`) are removed first.

    Raises
    ------
    IsADirectoryError
        If ``path`` is a folder: said before any work is done, not when the file is committed.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "the output is a folder, not a file", str(path))
    sweep_stale(path)
    return path.with_name(f".{path.name}.{_HOST}-{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def sweep_stale(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of ``path`` left by killed processes of this host; return them.

    Only names of the pattern ``.<name>.<this host>-<pid>.<hex8>.tmp`` whose process no longer
    exists are removed: a live writer's file, or another host's, is never touched.
    """
    path = Path(path)
    prefix = f".{path.name}.{_HOST}-"
    removed = []
    try:
        candidates = [p for p in path.parent.iterdir() if p.name.startswith(prefix) and p.name.endswith(".tmp")]
    except OSError:
        return removed
    for p in candidates:
        pid = p.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)


def commit(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Flush ``tmp`` to disk, rename it onto ``path`` and flush the folder; return ``path``.

    For writers that fill a :func:`temporary_path` over many calls (the larcv3 writer) and
    finish it themselves; on failure the caller removes ``tmp``.
    """
    tmp, path = Path(tmp), Path(path)
    _fsync_file(tmp)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


@contextmanager
def atomic_path(path: str | os.PathLike, *, make_parents: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on normal exit it replaces ``path``, on error it is removed.

    Parameters
    ----------
    path : path-like
        The destination.
    make_parents : bool
        Create missing parent folders first (default).

    Yields
    ------
    Path
        The temporary file to write (it does not exist yet; the writer creates it).

    Raises
    ------
    FileNotFoundError
        If the writer did not create the temporary file.
    OSError
        If the folder cannot be written; the destination is unchanged.

    Examples
    --------
    >>> with atomic_path("out.pt") as tmp:
    ...     torch.save(obj, tmp)
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)``, then move the result onto ``path`` atomically; return ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        write(tmp)
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return ``path``."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (``encoding``, default UTF-8); return ``path``."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding=encoding))


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, object]]) -> Path:
    """Write ``rows`` as CSV to ``path`` atomically (a header of the first row's keys; no rows: an empty file)."""
    import csv

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            if rows:
                writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)

    return atomic_write(path, write)
