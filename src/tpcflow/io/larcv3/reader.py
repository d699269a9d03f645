"""Read larcv3 HDF5 files (larcv 3.5.1 IOManager schema) as one dataset.

Examples
--------
>>> with open_larcv3(["a.h5", "b.h5"]) as r:
...     ev = r.read(0)
...     charge = ev.products["sparse2d/sbndwire"][0].to_dense()   # (2048, 1280) float32
...     block = r.read_sparse_block("sparse2d/sbndwire", 0, 16)   # loader fast path
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from tpcflow.errors import ConfigError, DataFormatError, EntryOutOfRangeError, ProductNotFoundError, context_lines
from tpcflow.io.products import Event, EventID, ImageMeta, ProductInfo, product_key, split_key

from ._decode import decode_range, sparse_arrays
from ._file import LarcvFile
from .block import SparseBlock

__all__ = ["Larcv3Reader", "SparseBlock", "open_larcv3"]


def _normal_key(key: str) -> str:
    """``type_producer`` or ``type/producer`` -> ``type/producer``; unknown forms are kept as given."""
    try:
        return product_key(*split_key(key))
    except ValueError:
        return str(key)


def _as_paths(paths) -> list[Path]:
    if isinstance(paths, (str, Path)):
        return [Path(paths)]
    out = [Path(p) for p in paths]
    if not out:
        raise ValueError("open_larcv3 needs at least one file, but got an empty list")
    return out


class Larcv3Reader:
    """Several larcv3 files read as one dataset, entries concatenated in file order.

    Parameters
    ----------
    paths : str, Path, or list of them
    products : list of str, optional
        Product keys ``"<type>/<producer>"`` (or ``<type>_<producer>``) to restrict to.
    direct : bool
        Read bulk tables (voxels, images...) by direct chunk reads (``os.pread`` + zlib on
        a small thread pool, ``$TPCFLOW_IO_THREADS``) where the layout allows; False reads
        everything through h5py.  Both give identical arrays.

    Raises
    ------
    DataFormatError
        A file is missing, not HDF5, truncated, not larcv3, or (without ``products``) the files
        hold different products.
    ProductNotFoundError
        A product of ``products`` is missing from a file (naming the file).
    ProductNotFoundError
        A requested product is not in the files; the message lists the available ones.

    Notes
    -----
    Source: larcv3 IOManager HDF5 schema (larcv 3.5.1), see :mod:`tpcflow.io.larcv3.schema`.
    The reader holds one h5py handle per file; it pickles by path and re-opens on unpickling.
    """

    def __init__(self, paths, products: Iterable[str] | None = None, *, direct: bool = True):
        self._paths = _as_paths(paths)
        self._direct = bool(direct)
        self._want = None if products is None else [_normal_key(k) for k in products]
        self._files: list[LarcvFile] = []
        try:
            for p in self._paths:
                self._files.append(LarcvFile(p, self._direct))
            self._check_products()
        except BaseException:
            self.close()
            raise
        counts = [f.n_entries for f in self._files]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._event_ids = np.concatenate([f.event_ids for f in self._files], axis=0)
        first = self._files[0]
        self._products = [
            ProductInfo(*first.groups[k], projections=max(f.projections(k) for f in self._files)) for k in self._keys
        ]

    def _check_products(self) -> None:
        """Every file must hold the products read: those asked for, or without ``products`` all of them."""
        first = self._files[0]
        ref = set(first.groups)
        if self._want is not None:  # only the products asked for must be in every file
            for f in self._files:
                for k in self._want:
                    if k not in f.groups:
                        raise ProductNotFoundError(k, available=f.groups, file_path=f.path, object_path="/Data")
            self._keys = list(dict.fromkeys(self._want))
            return
        for f in self._files[1:]:
            got = set(f.groups)
            if got != ref:
                raise DataFormatError(
                    f"files hold different products: {sorted(got - ref)} only in {f.path}, "
                    f"{sorted(ref - got)} only in {first.path}; to read the ones they share, name them "
                    f"(products=...): {sorted(got & ref)}",
                    file_path=f.path,
                    object_path="/Data",
                )
        self._keys = sorted(ref)

    # -- pickling: re-open by path -------------------------------------------------
    def __getstate__(self) -> dict:
        return {"paths": [str(p) for p in self._paths], "products": self._want, "direct": self._direct}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["paths"], state["products"], direct=state.get("direct", True))

    # -- basic properties --------------------------------------------------------
    def __len__(self) -> int:
        return int(self._starts[-1])

    def __enter__(self) -> Larcv3Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Larcv3Reader {len(self)} entries, {len(self._paths)} file(s), products {self._keys}>"

    @property
    def files(self) -> list[Path]:
        """The files, in entry order."""
        return list(self._paths)

    @property
    def file_starts(self) -> list[int]:
        """The entry number of each file's first entry (files in order; an empty file's equals the next's)."""
        return [int(s) for s in self._starts[:-1]]

    @property
    def products(self) -> list[ProductInfo]:
        """The products (type, producer, max number of projections; 1 for particle)."""
        return list(self._products)

    @property
    def keys(self) -> list[str]:
        """The product keys ``"<type>/<producer>"``."""
        return list(self._keys)

    @property
    def event_ids(self) -> np.ndarray:
        """(N, 3) int64 run / subrun / event of every entry."""
        return self._event_ids

    def close(self) -> None:
        """Close every file handle (reading again re-opens them)."""
        for f in self._files:
            f.close()

    # -- entry bookkeeping -------------------------------------------------------
    def _where(self) -> str:
        return str(self._paths[0]) if len(self._paths) == 1 else f"{len(self._paths)} files starting at {self._paths[0]}"

    def _check_entry(self, entry) -> int:
        try:
            entry = operator.index(entry)
        except TypeError:
            raise TypeError(f"entry must be an integer, but got entry={entry!r}") from None
        if not 0 <= entry < len(self):
            raise EntryOutOfRangeError(entry, len(self), file_path=self._where())
        return entry

    def locate(self, entry: int) -> tuple[Path, int]:
        """Return (file, local entry) of global ``entry``."""
        entry = self._check_entry(entry)
        i = bisect.bisect_right(self._starts.tolist(), entry) - 1
        return self._paths[i], entry - int(self._starts[i])

    def _pieces(self, start: int, stop: int):
        """Yield (file, local_start, local_stop, global_start) covering [start, stop)."""
        for i, f in enumerate(self._files):
            a, b = int(self._starts[i]), int(self._starts[i + 1])
            lo, hi = max(start, a), min(stop, b)
            if lo < hi:
                yield f, lo - a, hi - a, lo

    def _check_range(self, start, stop) -> tuple[int, int]:
        start, stop = operator.index(start), operator.index(stop)
        if not 0 <= start <= len(self):
            raise EntryOutOfRangeError(start, len(self), file_path=self._where())
        if stop < start:
            raise ConfigError(f"entry range [{start}, {stop}): stop must not be below start"
                              f"{context_lines(file_path=self._where())}")
        if stop > len(self):
            raise EntryOutOfRangeError(stop - 1, len(self), file_path=self._where())
        return start, stop

    def _resolve(self, products: Sequence[str] | None, entry: int | None) -> list[str]:
        if products is None:
            return self._keys
        keys = []
        for k in products:
            key = _normal_key(k)
            if key not in self._keys:
                err = ProductNotFoundError(key, available=self._keys, file_path=self._where(), object_path="/Data")
                if entry is not None:
                    err.add_note(f"at entry {entry}")
                raise err
            keys.append(key)
        return keys

    # -- reading -----------------------------------------------------------------
    def read(self, entry: int, products: Sequence[str] | None = None) -> Event:
        """Read one entry.

        Returns
        -------
        Event
            ``products`` keyed ``"<type>/<producer>"`` (see :class:`tpcflow.io.products.Event`).

        Raises
        ------
        EntryOutOfRangeError, ProductNotFoundError, DataFormatError
        """
        entry = self._check_entry(entry)
        return self.read_range(entry, entry + 1, products)[0]

    def read_range(self, start: int, stop: int, products: Sequence[str] | None = None) -> list[Event]:
        """Read entries ``[start, stop)`` with one h5py slice per dataset and file.

        Returns
        -------
        list of Event
            Equal, entry by entry, to :meth:`read`.
        """
        start, stop = self._check_range(start, stop)
        keys = self._resolve(products, start)
        events = [
            Event(EventID(*(int(v) for v in self._event_ids[i])), {}, entry=i) for i in range(start, stop)
        ]
        for f, a, b, g in self._pieces(start, stop):
            for key in keys:
                values = decode_range(f.tables(key), a, b, g)
                for j, v in enumerate(values):
                    events[g - start + j].products[key] = v
        return events

    def max_voxels(self, key: str) -> int:
        """The most voxels one projection of sparse product ``key`` holds in any entry of the files.

        Read from the ``voxel_extents`` index tables (no voxel data is read); 0 without entries.

        Raises
        ------
        ProductNotFoundError, DataFormatError
        """
        (key,) = self._resolve([key], None)
        if not key.startswith("sparse"):
            raise DataFormatError(f"max_voxels needs a sparse2d/sparse3d product, but got {key!r}")
        most = 0
        for f in self._files:
            n = f.tables(key).tables["voxel_extents"]["N"]
            most = max(most, int(n.max()) if n.size else 0)
        return most

    def read_sparse_block(self, key: str, start: int, stop: int) -> SparseBlock:
        """Read the voxels of a sparse2d/sparse3d product for entries ``[start, stop)`` (loader fast path).

        Returns
        -------
        SparseBlock
            index (M,) uint64, values (M,) float32, counts (E, P) int64, metas (P ImageMeta).

        Raises
        ------
        ProductNotFoundError, EntryOutOfRangeError, DataFormatError
        """
        start, stop = self._check_range(start, stop)
        (key,) = self._resolve([key], start)
        if not key.startswith("sparse"):
            raise DataFormatError(f"read_sparse_block needs a sparse2d/sparse3d product, but got {key!r}")
        parts = []
        for f, a, b, g in self._pieces(start, stop):
            t = f.tables(key)
            parts.append((t, g, *sparse_arrays(t, a, b, g)))
        n_proj = np.concatenate([p[-1] for p in parts]) if parts else np.zeros(0, np.int64)
        P = int(n_proj.max()) if n_proj.size else 0
        counts = np.zeros((stop - start, P), np.int64)
        metas: list[ImageMeta] = []
        pids = np.full(P, -1, np.int64)
        for t, g, _ids, _vals, _s, vcount, rows, np_ in parts:
            e_idx = np.repeat(np.arange(g - start, g - start + len(np_)), np_)
            p_idx = np.arange(len(vcount)) - np.repeat(np.concatenate([[0], np.cumsum(np_)[:-1]]), np_)
            counts[e_idx, p_idx] = vcount
            if not metas and P and (np_ == P).any():
                e0 = int(np.flatnonzero(np_ == P)[0])
                r0 = int(np.concatenate([[0], np.cumsum(np_)])[e0])
                metas = [t.meta(int(r)) for r in rows[r0 : r0 + P]]
                pids = np.array([m.projection_id for m in metas], np.int64)
        for t, g, _ids, _vals, _s, vcount, rows, np_ in parts:  # column p must be the same projection everywhere
            got = t.tables["image_meta"]["projection_id"][rows].astype(np.int64)
            p_idx = np.arange(len(rows)) - np.repeat(np.concatenate([[0], np.cumsum(np_)[:-1]]), np_)
            bad = np.flatnonzero(got != pids[p_idx])
            if bad.size:
                e = int(np.repeat(np.arange(g, g + len(np_)), np_)[bad[0]])
                raise DataFormatError(
                    f"projection {int(p_idx[bad[0]])} of this entry has projection_id {int(got[bad[0]])}, "
                    f"but {int(pids[p_idx[bad[0]]])} in other entries of the block; read entries one by one",
                    file_path=t.path,
                    object_path=t.object_path + "/image_meta",
                    entry=e,
                )
        index = np.concatenate([p[2] for p in parts]) if len(parts) > 1 else (parts[0][2] if parts else np.zeros(0, np.uint64))
        values = np.concatenate([p[3] for p in parts]) if len(parts) > 1 else (parts[0][3] if parts else np.zeros(0, np.float32))
        return SparseBlock(index, values, counts, metas, start, self._event_ids[start:stop].copy(),
                           projections=n_proj.astype(np.int64))


def open_larcv3(paths, products: Iterable[str] | None = None, *, direct: bool = True) -> Larcv3Reader:
    """Open one or many larcv3 files as one dataset (see :class:`Larcv3Reader`)."""
    return Larcv3Reader(paths, products, direct=direct)
