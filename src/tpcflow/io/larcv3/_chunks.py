"""Fast bulk reads of a 1-D chunked dataset: chunk index once, then pread + zlib per chunk.

larcv3 bulk tables (voxels, images, particles) are 1-D datasets of small chunks
(1000 voxels = 16 kB) compressed with deflate only.  Reading a range through
h5py costs HDF5's per-chunk machinery and decompresses serially; here the chunk
index (file address and size of every chunk, ``H5Dchunk_iter``) is read once,
then a range is served with one ``os.pread`` of the chunks' bytes and inflates
spread over a small thread pool.  Inflating is most of the cost of a read, so it uses
libdeflate (the ``deflate`` package: about 1.7x faster than zlib on these 16 kB chunks,
and it releases the GIL) when installed, else ``zlib`` (which releases the GIL too).

Only plain layouts are handled (every chunk allocated, filters = none or deflate,
no filter skipped); anything else, or a first chunk that does not decode to what
h5py reads, makes :func:`ChunkIndex.build` return None and the caller uses h5py.
"""

from __future__ import annotations

import os
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np

from tpcflow.errors import DataFormatError

try:
    import deflate as _libdeflate
except ImportError:  # pragma: no cover - deflate is a declared dependency
    _libdeflate = None

__all__ = ["ChunkIndex", "io_threads"]

_H5Z_FILTER_DEFLATE = 1
_POOL: ThreadPoolExecutor | None = None
_POOL_PID = -1
_POOL_LOCK = threading.Lock()
_CPUS = os.cpu_count() or 1
# below this many chunks, inflating in the calling thread is cheaper than the hand-off
_MIN_PARALLEL_CHUNKS = 8
#: what a corrupt or truncated compressed chunk raises
_INFLATE_ERRORS = (zlib.error,) + ((_libdeflate.DeflateError,) if _libdeflate is not None else ())


def io_threads() -> int:
    """Threads used to inflate chunks: $TPCFLOW_IO_THREADS, else min(4, CPUs)."""
    env = os.environ.get("TPCFLOW_IO_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    return max(1, min(4, _CPUS))


def _pool() -> ThreadPoolExecutor | None:
    """The process-wide inflate pool (re-created after fork; None with one thread)."""
    global _POOL, _POOL_PID
    n = io_threads()
    if n <= 1:
        return None
    with _POOL_LOCK:
        if _POOL is None or _POOL_PID != os.getpid():
            _POOL = ThreadPoolExecutor(max_workers=n, thread_name_prefix="tpcflow-inflate")
            _POOL_PID = os.getpid()
        return _POOL


class ChunkIndex:
    """Addresses of every chunk of one 1-D dataset, for direct reads.

    Attributes
    ----------
    chunk : int
        Rows per chunk.
    offsets, sizes : (K,) int64
        File address and stored size [bytes] of chunk k (rows k*chunk ... (k+1)*chunk).
    deflate : bool
        Whether chunks are deflate-compressed.
    """

    def __init__(self, path: Path, name: str, dtype: np.dtype, n_rows: int, chunk: int,
                 offsets: np.ndarray, sizes: np.ndarray, deflate: bool):  # fmt: skip
        self.path, self.name, self.dtype = path, name, dtype
        self.n_rows, self.chunk = n_rows, chunk
        self.offsets, self.sizes, self.deflate = offsets, sizes, deflate
        self.chunk_bytes = chunk * dtype.itemsize

    @classmethod
    def build(cls, dset: h5py.Dataset, path: Path) -> ChunkIndex | None:
        """Index ``dset``'s chunks, or None if the fast path does not apply."""
        try:
            if dset.ndim != 1 or dset.chunks is None or dset.shape[0] == 0:
                return None
            plist = dset.id.get_create_plist()
            filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
            if filters not in ([], [_H5Z_FILTER_DEFLATE]):
                return None
            chunk = int(dset.chunks[0])
            n_chunks = -(-dset.shape[0] // chunk)
            rows, offs, sizes, masks = [], [], [], []

            def visit(info):
                rows.append(info.chunk_offset[0])
                masks.append(info.filter_mask)
                offs.append(info.byte_offset)
                sizes.append(info.size)

            if hasattr(dset.id, "chunk_iter"):
                dset.id.chunk_iter(visit)
            else:  # older HDF5: one call per chunk
                for i in range(dset.id.get_num_chunks()):
                    visit(dset.id.get_chunk_info(i))
            if len(rows) != n_chunks or any(masks):
                return None
            order = np.argsort(np.asarray(rows, np.int64))
            rows_a = np.asarray(rows, np.int64)[order]
            if not np.array_equal(rows_a, np.arange(n_chunks, dtype=np.int64) * chunk):
                return None
            idx = cls(path, dset.name, dset.dtype, int(dset.shape[0]), chunk,
                      np.asarray(offs, np.int64)[order], np.asarray(sizes, np.int64)[order], bool(filters))  # fmt: skip
            # sanity: the first chunk must decode to what HDF5 reads
            n0 = min(chunk, dset.shape[0])
            ref = np.empty(n0, dset.dtype)
            dset.read_direct(ref, source_sel=np.s_[0:n0])
            with open(path, "rb") as fh:
                got = idx.read(fh.fileno(), 0, n0)
            if got.tobytes() != ref.tobytes():
                return None
            return idx
        except (OSError, RuntimeError, ValueError, TypeError, AttributeError, KeyError, DataFormatError,
                *_INFLATE_ERRORS):
            return None

    def _inflate(self, blob: bytes) -> bytes:
        if not self.deflate:
            out = blob
        elif _libdeflate is not None:  # needs the exact size: HDF5 stores every chunk whole
            out = _libdeflate.zlib_decompress(blob, self.chunk_bytes)
        else:
            out = zlib.decompress(blob, bufsize=self.chunk_bytes)
        if len(out) != self.chunk_bytes:
            raise zlib.error(f"chunk inflated to {len(out)} bytes, expected {self.chunk_bytes}")
        return out

    def _pread(self, fd: int, offs: np.ndarray, sizes: np.ndarray, lo: int, hi: int, entry) -> list:
        """Read the stored bytes of the chunks: one pread of their span when they lie close
        together (the usual case), else one pread per chunk (chunks rewritten at the file end)."""
        start, stop = int(offs.min()), int((offs + sizes).max())
        total = int(sizes.sum())
        if stop - start <= 2 * total + (1 << 16):
            spans = [(start, stop)]
        else:
            spans = list(zip(offs.tolist(), (offs + sizes).tolist()))
        views = {}
        for a, b in spans:
            data = os.pread(fd, b - a, a)
            if len(data) < b - a:
                raise DataFormatError(
                    f"cannot read rows {lo}..{hi}: the file ends at byte {a + len(data)}, "
                    f"before the chunk data ending at byte {b} (truncated file)",
                    file_path=self.path,
                    object_path=self.name,
                    entry=entry,
                )
            views[a] = (b, memoryview(data))
        if len(spans) == 1:
            mv = views[start][1]
            return [mv[o - start : o - start + n] for o, n in zip(offs.tolist(), sizes.tolist())]
        return [views[o][1] for o in offs.tolist()]

    def _inflate_list(self, blobs: list) -> list[bytes]:
        return [self._inflate(b) for b in blobs]

    def _inflate_all(self, blobs: list) -> list[bytes]:
        """Inflate every chunk: one batch per pool thread, the last batch in the calling thread."""
        pool = _pool() if len(blobs) >= _MIN_PARALLEL_CHUNKS else None
        if pool is None:
            return self._inflate_list(blobs)
        n = min(io_threads(), len(blobs))
        bounds = [len(blobs) * i // n for i in range(n + 1)]
        futures = [pool.submit(self._inflate_list, blobs[bounds[i] : bounds[i + 1]]) for i in range(n - 1)]
        last = self._inflate_list(blobs[bounds[n - 1] : bounds[n]])
        parts: list[bytes] = []
        for f in futures:
            parts.extend(f.result())
        parts.extend(last)
        return parts

    def read(self, fd: int, lo: int, hi: int, *, entry: int | None = None) -> np.ndarray:
        """Return rows ``[lo, hi)`` as a new array of the dataset's dtype.

        Raises
        ------
        DataFormatError
            If the file ends before a chunk (truncated) or a chunk does not inflate.
        """
        if hi <= lo:
            return np.empty(0, self.dtype)
        k0, k1 = lo // self.chunk, (hi - 1) // self.chunk + 1
        offs, sizes = self.offsets[k0:k1], self.sizes[k0:k1]
        try:
            blobs = self._pread(fd, offs, sizes, lo, hi, entry)
            parts = self._inflate_all(blobs)
        except _INFLATE_ERRORS as err:
            raise DataFormatError(
                f"cannot read rows {lo}..{hi}: corrupt compressed chunk ({err})",
                file_path=self.path,
                object_path=self.name,
                entry=entry,
            ) from None
        except OSError as err:
            raise DataFormatError(
                f"cannot read rows {lo}..{hi} ({err.strerror or err})",
                file_path=self.path,
                object_path=self.name,
                entry=entry,
            ) from None
        out = np.frombuffer(bytearray().join(parts), self.dtype)  # one copy, writable
        base = k0 * self.chunk
        return out[lo - base : hi - base]
