"""One larcv3 file as the reader sees it: a lazily opened h5py handle, the event ids, the product
groups, and per-product index tables; plus a raw file descriptor for direct chunk reads.

Source: larcv 3.5.1 IOManager schema (``/Events/event_id``, ``/Data/<type>_<producer>_group``).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import h5py
import numpy as np

from tpcflow.errors import DataFormatError
from tpcflow.io.products import product_key

from ._h5 import open_h5
from ._tables import ProductTables, read_slice
from .schema import group_name, parse_group_name

__all__ = ["LarcvFile"]


class LarcvFile:
    """One larcv3 file: lazily opened h5py handle, event ids, per-product index tables."""

    def __init__(self, path: Path, direct: bool = True):
        self.path = path
        self.direct = direct
        self._tables: dict[str, ProductTables] = {}
        self._fd_num: int | None = None
        self._fd_pid = -1
        self._lock = threading.RLock()
        self._h5: h5py.File | None = open_h5(path)
        try:
            self._scan(self._h5)
        except DataFormatError:
            self.close()
            raise
        except (OSError, KeyError, RuntimeError, ValueError) as err:
            self.close()
            raise DataFormatError(f"cannot read larcv3 layout ({err})", file_path=path) from None

    def _scan(self, h5: h5py.File) -> None:
        """Read event ids and list the product groups."""
        path = self.path
        if "Events" not in h5 or "event_id" not in h5["Events"]:
            raise DataFormatError("not a larcv3 file: no /Events/event_id dataset", file_path=path, object_path="/Events")
        if "Data" not in h5:
            raise DataFormatError("not a larcv3 file: no /Data group", file_path=path, object_path="/Data")
        dset = h5["Events/event_id"]
        if not isinstance(dset, h5py.Dataset) or dset.ndim != 1 or not {"run", "subrun", "event"} <= set(
                dset.dtype.names or ()):
            shape, dtype = getattr(dset, "shape", None), getattr(dset, "dtype", type(dset).__name__)
            raise DataFormatError(f"/Events/event_id must be a 1-D table with fields run, subrun, event; it is "
                                  f"shape {shape} of {dtype}", file_path=path, object_path="/Events/event_id")
        ev = read_slice(dset, 0, dset.shape[0], path=path)
        self.event_ids = np.stack([ev["run"], ev["subrun"], ev["event"]], axis=1).astype(np.int64)
        self.n_entries = int(self.event_ids.shape[0])
        self.groups: dict[str, tuple[str, str]] = {}
        for name in h5["Data"]:
            parsed = parse_group_name(name)
            if parsed is not None:
                self.groups[product_key(*parsed)] = parsed

    def fd(self) -> int:
        """OS file descriptor for direct chunk reads (re-opened after fork)."""
        fd = self._fd_num
        if fd is not None and self._fd_pid == os.getpid():
            return fd
        with self._lock:
            if self._fd_num is None or self._fd_pid != os.getpid():
                try:
                    self._fd_num = os.open(self.path, os.O_RDONLY)
                except OSError as err:
                    raise DataFormatError(f"cannot open file ({err.strerror})", file_path=self.path) from None
                self._fd_pid = os.getpid()
            return self._fd_num

    @property
    def h5(self) -> h5py.File:
        if self._h5 is None:
            self._h5 = open_h5(self.path)
        return self._h5

    def tables(self, key: str) -> ProductTables:
        t = self._tables.get(key)
        if t is None:
            with self._lock:
                t = self._tables.get(key)
                if t is None:
                    t = self._load_tables(key)
        return t

    def _load_tables(self, key: str) -> ProductTables:
        fd = self.fd if self.direct else None
        t = ProductTables(self.h5, self.path, *self.groups[key], self.n_entries, fd=fd)
        self._tables[key] = t
        return t

    def projections(self, key: str) -> int:
        """Largest number of projections of ``key`` in any entry (1 for particle); reads only ``extents``."""
        ptype, producer = self.groups[key]
        if ptype == "particle":
            return 1
        if key in self._tables:
            ext = self._tables[key].extents
        else:
            try:
                dset = self.h5["Data"][group_name(ptype, producer)]["extents"]
            except (KeyError, OSError):
                raise DataFormatError(
                    "product group has no 'extents' dataset",
                    file_path=self.path,
                    object_path=f"/Data/{group_name(ptype, producer)}",
                ) from None
            ext = read_slice(dset, 0, dset.shape[0], path=self.path)
        return int(ext["N"].max()) if ext.shape[0] else 0

    def __del__(self) -> None:
        fd = getattr(self, "_fd_num", None)
        if fd is not None and getattr(self, "_fd_pid", -1) == os.getpid():
            try:
                os.close(fd)
            except OSError:
                pass

    def close(self) -> None:
        if self._fd_num is not None and self._fd_pid == os.getpid():
            os.close(self._fd_num)
        self._fd_num = None
        if self._h5 is not None:
            try:
                self._h5.close()
            finally:
                self._h5 = None
                self._tables.clear()
