"""Write larcv3 HDF5 files that larcv 3.5.1 reads: same names, dtypes, chunking and gzip.

The file is written to a temporary file in the destination directory and renamed
into place on :meth:`Larcv3Writer.close`, so readers never see a partial file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np

from tpcflow import atomic
from tpcflow.errors import DataFormatError
from tpcflow.io.products import Event, product_key, split_key

from ._encode import encode, extents_row
from ._h5 import append_rows, create_dataset, h5_type, remove_quietly
from ._tables import family
from .schema import DATASETS, EVENT_ID_CHUNK, EVENT_ID_DTYPE, PRODUCT_DIMS, dataset_dtype, group_name

__all__ = ["Larcv3Writer", "write_larcv3"]

# Flush buffered rows to HDF5 once this many bulk rows (voxels, pixels...) are pending.
_FLUSH_ROWS = 4_000_000


class _ProductWriter:
    """Buffered appender for one product group."""

    def __init__(self, data: h5py.Group, ptype: str, producer: str, compression: int, path: Path):
        self.ptype, self.producer, self.path = ptype, producer, path
        self.key = product_key(ptype, producer)
        self.family = family(ptype)
        self.dim = PRODUCT_DIMS[ptype]
        self.compression = compression
        self.group = data.create_group(group_name(ptype, producer), track_order=False)
        self.dsets: dict[str, h5py.Dataset] = {}
        self.specs = {name: (kind, chunk) for name, kind, chunk in DATASETS[ptype]}
        for name, (kind, chunk) in self.specs.items():
            if chunk is not None:  # larcv creates 'images' at the first serialize, chunk = that entry's size
                self.dsets[name] = create_dataset(self.group, name, dataset_dtype(ptype, kind), chunk, compression)
        self.counts = {name: 0 for name in self.specs}
        self.pending: dict[str, list[np.ndarray]] = {name: [] for name in self.specs}
        self.pending_rows = 0

    def add_empty(self) -> None:
        """An entry without this product: an extents row with N = 0."""
        first_child = next(n for n in self.specs if n != "extents")
        self.queue({"extents": extents_row(self.counts[first_child], 0)})

    def queue(self, rows: dict) -> None:
        """Append one entry's encoded rows (from :func:`encode`) to the buffers."""
        for name, arr in rows.items():
            self.pending[name].append(arr)
            self.counts[name] += int(arr.shape[0])
            if name in ("voxels", "images", "particles", "bboxes"):
                self.pending_rows += int(arr.shape[0])

    def flush(self) -> None:
        for name, parts in self.pending.items():
            if not parts:
                continue
            arr = np.concatenate(parts) if len(parts) > 1 else parts[0]
            if name not in self.dsets:
                if arr.shape[0] == 0:
                    continue
                kind, _ = self.specs[name]
                chunk = int(parts[0].shape[0]) or int(arr.shape[0])
                self.dsets[name] = create_dataset(self.group, name, dataset_dtype(self.ptype, kind), chunk, self.compression)
            append_rows(self.dsets[name], arr)
            parts.clear()
        self.pending_rows = 0


def _create_event_id(events: h5py.Group, compression: int) -> h5py.Dataset:
    """``/Events/event_id``: IOManager always sets ``H5Pset_deflate(compression)`` on it, level 0 included."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_chunk((EVENT_ID_CHUNK,))
    dcpl.set_deflate(compression)
    dcpl.set_obj_track_times(False)
    space = h5py.h5s.create_simple((0,), (h5py.h5s.UNLIMITED,))
    return h5py.Dataset(h5py.h5d.create(events.id, b"event_id", h5_type(EVENT_ID_DTYPE), space, dcpl=dcpl))


class Larcv3Writer:
    """Write events to a larcv3 file (larcv 3.5.1 IOManager schema).

    Parameters
    ----------
    path : str or Path
        Destination; it appears (atomically, by rename) when the writer is closed.
    compression : int
        gzip level 0-9 of the product datasets (larcv ``Output.Compression``, default 1).
        At 0 the product datasets have no filter; ``/Events/event_id`` always carries
        a deflate filter at this level, as larcv writes it.

    Raises
    ------
    DataFormatError
        On :meth:`write` of an invalid product (the event is refused, the writer stays usable) (voxel index at or beyond the image size,
        duplicate voxel index, image shape not matching its meta, wrong dimension...);
        the message names the file, product and entry.

    Notes
    -----
    Voxel ids are written sorted (values permuted with them).  The writer writes exactly
    what it is given: an entry without a product gets an empty extents row.  A product
    first seen after entry 0 gets empty rows for the earlier entries.

    Examples
    --------
    >>> with Larcv3Writer("out.h5") as w:
    ...     for ev in events:
    ...         w.write(ev)
    """

    def __init__(self, path, compression: int = 1):
        if isinstance(compression, bool) or not isinstance(compression, (int, np.integer)) or not 0 <= compression <= 9:
            raise ValueError(f"compression must be an integer gzip level 0..9, but got compression={compression!r}")
        self.path = Path(path)
        self.compression = int(compression)
        if not self.path.parent.is_dir():
            raise DataFormatError("output directory does not exist", file_path=self.path.parent)
        self._tmp = atomic.temporary_path(self.path)
        try:
            self._h5 = h5py.File(self._tmp, "w", track_order=False)
        except OSError as err:
            raise DataFormatError(f"cannot create file ({err})", file_path=self._tmp) from None
        try:
            events = self._h5.create_group("Events")
            self._event_id = _create_event_id(events, self.compression)
            self._data = self._h5.create_group("Data")
        except BaseException:
            self.abort()
            raise
        self._products: dict[str, _ProductWriter] = {}
        self._event_rows: list[tuple[int, int, int]] = []
        self._n = 0
        self._closed = False

    def __enter__(self) -> Larcv3Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __len__(self) -> int:
        return self._n

    def write(self, event: Event) -> None:
        """Append one event (its event id and every product in ``event.products``).

        Raises
        ------
        DataFormatError
            If a product is invalid (see the class docstring); nothing of the event is written.
        TypeError
            If ``event`` is not a :class:`tpcflow.io.products.Event`.
        ValueError
            If the writer is closed.
        """
        if self._closed:
            raise ValueError(f"writer for {self.path} is closed")
        if not isinstance(event, Event):
            raise TypeError(f"write() needs a tpcflow.io.products.Event, but got {type(event).__name__}")
        entry = self._n
        # encode (and check) every product first: a refused event leaves the writer unchanged
        encoded = []
        for key, value in event.products.items():
            try:
                ptype, producer = split_key(key)
            except ValueError as err:
                raise DataFormatError(str(err), file_path=self.path, object_path=key, entry=entry) from None
            key = product_key(ptype, producer)
            pw = self._products.get(key)
            counts = pw.counts if pw is not None else {name: 0 for name, _, _ in DATASETS[ptype]}
            rows = encode(family(ptype), value, counts, PRODUCT_DIMS[ptype], path=self.path, key=key, entry=entry)
            encoded.append((key, ptype, producer, rows))
        try:
            for key, ptype, producer, rows in encoded:
                pw = self._products.get(key)
                if pw is None:
                    pw = _ProductWriter(self._data, ptype, producer, self.compression, self.path)
                    for _ in range(entry):
                        pw.add_empty()
                    self._products[key] = pw
                pw.queue(rows)
            seen = {key for key, *_ in encoded}
            for key, pw in self._products.items():
                if key not in seen:
                    pw.add_empty()
        except BaseException:
            self.abort()
            raise
        eid = event.event_id
        self._event_rows.append((int(eid.run), int(eid.subrun), int(eid.event)))
        self._n += 1
        if sum(pw.pending_rows for pw in self._products.values()) >= _FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows to the temporary file."""
        if self._event_rows:
            rows = np.zeros(len(self._event_rows), EVENT_ID_DTYPE)
            arr = np.array(self._event_rows, dtype=np.int64)
            rows["run"], rows["subrun"], rows["event"] = arr[:, 0], arr[:, 1], arr[:, 2]
            append_rows(self._event_id, rows)
            self._event_rows.clear()
        for pw in self._products.values():
            pw.flush()

    def close(self) -> None:
        """Flush, close and rename the temporary file onto ``path``."""
        if self._closed:
            return
        try:
            self.flush()
            self._h5.close()
            atomic.commit(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True

    def abort(self) -> None:
        """Drop everything written so far and remove the temporary file."""
        self._closed = True
        try:
            if self._h5.id.valid:
                self._h5.close()
        except Exception:  # noqa: BLE001 - best-effort clean-up before removing the file
            pass
        remove_quietly(self._tmp)


def write_larcv3(path, events: Iterable[Event], compression: int = 1) -> Path:
    """Write ``events`` to a larcv3 file atomically; return its path (see :class:`Larcv3Writer`)."""
    with Larcv3Writer(path, compression=compression) as w:
        for ev in events:
            w.write(ev)
    return Path(path)
