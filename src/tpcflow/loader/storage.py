"""Storage slots of the circular buffer, laid out in one shared memory-mapped file.

Every slot holds, for a fixed maximum batch size B: a header (number of entries, their
global entry numbers, their event ids, the row count of each variable-length batch) and
one array per batch filler.  Dense fillers also keep the flat indices they wrote last
time ("dirty list"), so that the next fill of that slot clears only those elements
instead of zeroing the whole batch (zeroing [4,3,1280,2048] float32 costs ~10 ms per
batch at ~5 GB/s; see the shared RECIPES).  A dirty count of -1 means "clear it all",
which is also chosen when more than 1/64 of the batch was written (scattered writes cost
far more per element than a sequential fill).

The file lives in ``/dev/shm`` (a tmpfs: pages are shared, never written to disk) and is
unlinked as soon as every worker has mapped it, so nothing is left behind even if the
process is killed.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from tpcflow.errors import ConfigError

__all__ = ["SlotLayout", "SlotState", "SlotView", "create_file", "map_file"]

_ALIGN = 64


class SlotState(IntEnum):
    """larcv ``BatchDataState_t``: the state of one storage slot."""

    UNKNOWN = 0
    EMPTY = 1
    FILLING = 2
    FILLED = 3
    RELEASED = 4


def _align(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


@dataclass(frozen=True)
class _Region:
    offset: int
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


class SlotLayout:
    """Byte layout of the slots for a list of fillers and a batch size (picklable)."""

    def __init__(self, fillers, batch_size: int, num_storage: int):
        self.batch_size = int(batch_size)
        self.num_storage = int(num_storage)
        self.names = [f.name for f in fillers]
        off = 0
        regions: dict[str, _Region] = {}

        def add(name, dtype, shape):
            nonlocal off
            # builtin descriptor by name ("float32", not "<f4"): numpy's ufunc.at fast path needs it
            regions[name] = _Region(off, np.dtype(dtype).name, tuple(int(s) for s in shape))
            off = _align(off + regions[name].nbytes)

        b = self.batch_size
        add("_n", "<i8", (1,))
        add("_entries", "<i8", (b,))
        add("_event_ids", "<i8", (b, 3))
        add("_rows", "<i8", (max(1, len(fillers)),))
        self.fill_values = {}
        self.dirty_capacity = {}
        for f in fillers:
            shape = f.shape(b)
            add(f.name, f.dtype, shape)
            self.fill_values[f.name] = f.fill_value
            if f.tracks_dirty:
                total = int(np.prod(shape, dtype=np.int64))
                cap = min(total, max(1 << 16, total // 16))
                self.dirty_capacity[f.name] = cap
                add("_dirty_n/" + f.name, "<i8", (1,))
                add("_dirty/" + f.name, "<i8", (cap,))
        self.regions = regions
        self.slot_bytes = _align(off)
        self.total_bytes = self.slot_bytes * self.num_storage


class SlotView:
    """numpy views on one slot of a mapped file."""

    def __init__(self, buf, layout: SlotLayout, slot: int):
        base = slot * layout.slot_bytes
        self.layout = layout
        self.arrays = {
            name: np.frombuffer(buf, dtype=r.dtype, count=int(np.prod(r.shape)), offset=base + r.offset).reshape(r.shape)
            for name, r in layout.regions.items()
        }

    def batch(self, name: str) -> np.ndarray:
        return self.arrays[name]

    @property
    def n(self) -> int:
        return int(self.arrays["_n"][0])

    def clear(self, name: str) -> None:
        """Restore the filler's array to its fill value (only the dirty elements where known)."""
        arr = self.arrays[name]
        fill = self.layout.fill_values[name]
        if name not in self.layout.dirty_capacity:
            return
        n = int(self.arrays["_dirty_n/" + name][0])
        if n < 0 or n > self.layout.dirty_capacity[name]:
            arr.fill(fill)
        elif n:
            arr.reshape(-1)[self.arrays["_dirty/" + name][:n]] = fill

    def record_dirty(self, name: str, flat: np.ndarray | None) -> None:
        if name not in self.layout.dirty_capacity:
            return
        cap = self.layout.dirty_capacity[name]
        # a scattered write costs ~50-100x a sequential one (measured: clearing 250k scattered
        # elements 2.1 ms, zeroing all 7.9M 1.1 ms), so past 1/64 of the batch clear it all
        if flat is None or len(flat) > cap or len(flat) * 64 > self.arrays[name].size:
            self.arrays["_dirty_n/" + name][0] = -1
        else:
            self.arrays["_dirty/" + name][: len(flat)] = flat
            self.arrays["_dirty_n/" + name][0] = len(flat)


def _reserve(folder, size: int):
    """Create a file of ``size`` bytes in ``folder`` with its space reserved, or return None."""
    fd, path = tempfile.mkstemp(prefix=f"tpcflow-loader-{os.getpid()}-", dir=folder)
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, size)  # ENOSPC now, not SIGBUS in a worker later
        else:
            os.ftruncate(fd, size)
        return fd, path
    except OSError:
        os.close(fd)
        os.unlink(path)
        return None


def create_file(layout: SlotLayout) -> tuple[str, mmap.mmap]:
    """Create the backing file (in /dev/shm when it has room, else the temp folder) and map it.

    Dirty counts start at -1 (clear all).

    Raises
    ------
    ConfigError
        No folder has room for NumStorage x the slot size; the message gives the sizes.
    """
    size = max(layout.total_bytes, 1)
    folders = [f for f in ("/dev/shm", None) if f is None or (os.path.isdir(f) and os.access(f, os.W_OK))]
    got = None
    for folder in folders:
        got = _reserve(folder, size)
        if got is not None:
            break
    if got is None:
        raise ConfigError(
            f"no room for the loader storage: NumStorage={layout.num_storage} slots of "
            f"{layout.slot_bytes / 2**20:.0f} MiB (batch size {layout.batch_size}) in /dev/shm or "
            f"{tempfile.gettempdir()}; lower NumStorage, the batch size, or use Downsample"
        )
    fd, path = got
    try:
        mm = _map(fd, size)
    finally:
        os.close(fd)
    for s in range(layout.num_storage):
        view = SlotView(mm, layout, s)
        for name in layout.dirty_capacity:
            view.arrays["_dirty_n/" + name][0] = -1
    return path, mm


def _map(fd: int, size: int) -> mmap.mmap:
    # MAP_POPULATE builds the page tables now: without it every process takes one minor
    # page fault per 4 KiB page the first time it touches each slot (~100k per full-resolution slot)
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
    return mmap.mmap(fd, size, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)


def map_file(path: str, layout: SlotLayout) -> mmap.mmap:
    """Map an existing backing file (in a worker)."""
    fd = os.open(path, os.O_RDWR)
    try:
        return _map(fd, max(layout.total_bytes, 1))
    finally:
        os.close(fd)
