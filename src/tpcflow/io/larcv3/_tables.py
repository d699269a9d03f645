"""Per-file, per-product index tables of a larcv3 file, loaded once and checked.

A larcv3 product group is a tree of 1-D tables, each row pointing into the next
(larcv3 ``Extents_t`` / ``IDExtents_t``)::

    extents[entry]          -> rows of the projection table (voxel_extents, image_extents, ...)
    voxel_extents[row]      -> rows of voxels          (sparse2d/3d)
    projection_extents[row] -> rows of cluster_extents -> rows of voxels (cluster2d/3d)
    image_extents[row]      -> rows of images          (image2d, tensor*d)
    bbox_extents[row]       -> rows of bboxes          (bbox2d/3d)
    extents[entry]          -> rows of particles       (particle)

The index tables are small (a few rows per entry) and are read whole on first
use; the bulk tables (voxels, images, particles, bboxes) are only ever read by
slices.  Every pointer is checked against the length of the table it points
into, so a corrupt file gives a clear error instead of wrong numbers.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from tpcflow.errors import DataFormatError
from tpcflow.io.products import ImageMeta

from ._chunks import ChunkIndex
from .schema import DATASETS, PRODUCT_DIMS, dataset_dtype, group_name

__all__ = ["ProductTables", "meta_from_row", "read_slice"]

# child table of each pointer table, per product family
_POINTS_TO = {
    "extents": None,  # filled per type below
    "voxel_extents": "voxels",
    "projection_extents": "cluster_extents",
    "cluster_extents": "voxels",
    "image_extents": "images",
    "bbox_extents": "bboxes",
}
_FIRST_CHILD = {
    "sparse": "voxel_extents",
    "cluster": "projection_extents",
    "tensor": "image_extents",
    "particle": "particles",
    "bbox": "bbox_extents",
}


def family(ptype: str) -> str:
    """Return the product family: sparse, cluster, tensor, particle or bbox."""
    if ptype.startswith("sparse"):
        return "sparse"
    if ptype.startswith("cluster"):
        return "cluster"
    if ptype == "image2d" or ptype.startswith("tensor"):
        return "tensor"
    return "particle" if ptype == "particle" else "bbox"


def meta_from_row(row: np.void) -> ImageMeta:
    """Convert one ``image_meta`` row (larcv3 ImageMeta<D>) into :class:`ImageMeta`."""
    return ImageMeta(
        projection_id=int(row["projection_id"]),
        number_of_voxels=tuple(int(v) for v in row["number_of_voxels"]),
        image_sizes=tuple(float(v) for v in row["image_sizes"]),
        origin=tuple(float(v) for v in row["origin"]),
        valid=bool(row["valid"]),
    )


def read_slice(dset: h5py.Dataset, lo: int, hi: int, *, path: Path, entry: int | None = None) -> np.ndarray:
    """Read rows ``[lo, hi)`` of a 1-D dataset into a fresh array, wrapping h5py errors.

    Raises
    ------
    DataFormatError
        If HDF5 cannot read the rows (truncated or corrupt file).
    """
    out = np.empty(hi - lo, dtype=dset.dtype)
    if hi > lo:
        try:
            dset.read_direct(out, source_sel=np.s_[lo:hi])
        except (OSError, RuntimeError, ValueError, TypeError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise DataFormatError(
                f"cannot read rows {lo}..{hi} (file truncated or corrupt: {first})",
                file_path=path,
                object_path=dset.name,
                entry=entry,
            ) from None
    return out


class ProductTables:
    """Index tables of one product in one file.

    Attributes
    ----------
    ptype, producer : str
    family : str
        sparse, cluster, tensor, particle or bbox.
    extents : (E,) EXTENTS_DTYPE
    tables : dict of name -> ndarray
        The other index tables (voxel_extents, image_meta, ...), read whole.
    bulk : dict of name -> h5py.Dataset
        The bulk tables, read by slices.
    """

    def __init__(self, h5: h5py.File, path: Path, ptype: str, producer: str, n_entries: int, fd=None):
        self.path = path
        self._fd = fd  # callable returning an OS file descriptor of ``path`` (direct chunk reads), or None
        self._chunk_index: dict[str, ChunkIndex | None] = {}
        self.ptype = ptype
        self.producer = producer
        self.family = family(ptype)
        self.dim = PRODUCT_DIMS[ptype]
        gname = group_name(ptype, producer)
        self.object_path = f"/Data/{gname}"
        try:
            group = h5["Data"][gname]
        except (KeyError, OSError) as err:
            raise DataFormatError(f"cannot open product group ({err})", file_path=path, object_path=self.object_path) from None
        bulk_names = {"voxels", "images", "particles", "bboxes"}
        self.tables: dict[str, np.ndarray] = {}
        self.bulk: dict[str, h5py.Dataset] = {}
        for name, kind, _chunk in DATASETS[ptype]:
            if name not in group:
                if name == "images":  # larcv creates 'images' on the first write: absent if no entry was written
                    continue
                raise DataFormatError(
                    f"product group is missing its {name!r} dataset",
                    file_path=path,
                    object_path=self.object_path,
                )
            dset = group[name]
            want = dataset_dtype(ptype, kind)
            if dset.dtype.itemsize != want.itemsize or (want.names and set(want.names) - set(dset.dtype.names or ())):
                raise DataFormatError(
                    f"dataset has dtype {dset.dtype} but larcv3 uses {want}",
                    file_path=path,
                    object_path=dset.name,
                )
            if name in bulk_names:
                self.bulk[name] = dset
            else:
                self.tables[name] = read_slice(dset, 0, dset.shape[0], path=path)
        self.extents = self.tables.pop("extents")
        if self.extents.shape[0] < n_entries:
            raise DataFormatError(
                f"product has {self.extents.shape[0]} entries in its extents table but the file has {n_entries}",
                file_path=path,
                object_path=self.object_path + "/extents",
                entry=int(self.extents.shape[0]),
            )
        self._check_pointers()
        self._metas: dict[int, ImageMeta] = {}
        self._metas_by_bytes: dict[bytes, ImageMeta] = {}
        meta = self.tables.get("image_meta")
        self.total_voxels = (
            np.prod(meta["number_of_voxels"].astype(np.int64), axis=1) if meta is not None else None
        )

    def _length(self, name: str) -> int:
        if name in self.tables:
            return int(self.tables[name].shape[0])
        if name in self.bulk:
            return int(self.bulk[name].shape[0])
        return 0

    def _check(self, table: np.ndarray, name: str, child: str, *, per_entry: bool) -> None:
        n_child = self._length(child)
        end = table["first"].astype(np.int64) + table["N"].astype(np.int64)
        bad = np.flatnonzero((table["N"] > 0) & (end > n_child))
        if bad.size:
            i = int(bad[0])
            raise DataFormatError(
                f"{name}[{i}] points to rows {int(table['first'][i])}..{int(end[i])} of {child!r}, "
                f"which has {n_child} rows (file truncated or corrupt)",
                file_path=self.path,
                object_path=f"{self.object_path}/{name}",
                entry=i if per_entry else None,
            )

    def _check_pointers(self) -> None:
        first_child = _FIRST_CHILD[self.family]
        self._check(self.extents, "extents", first_child, per_entry=True)
        if "image_meta" in self.tables:
            self._check(self.extents, "extents", "image_meta", per_entry=True)
        for name, child in _POINTS_TO.items():
            if child is not None and name in self.tables:
                self._check(self.tables[name], name, child, per_entry=False)

    def read_bulk(self, name: str, lo: int, hi: int, entry: int | None = None) -> np.ndarray:
        """Read rows ``[lo, hi)`` of bulk table ``name`` (direct chunk reads when possible, else h5py)."""
        dset = self.bulk[name]
        if hi <= lo:
            return np.empty(0, dset.dtype)
        if self._fd is not None:
            if name not in self._chunk_index:
                self._chunk_index[name] = ChunkIndex.build(dset, self.path)
            idx = self._chunk_index[name]
            if idx is not None and hi <= idx.n_rows:
                return idx.read(self._fd(), lo, hi, entry=entry)
        return read_slice(dset, lo, hi, path=self.path, entry=entry)

    def meta(self, row: int) -> ImageMeta:
        """Return the :class:`ImageMeta` of image_meta row ``row`` (cached)."""
        m = self._metas.get(row)
        if m is None:  # rows with the same bytes share one object (most entries repeat the planes' meta)
            rec = self.tables["image_meta"][row]
            m = self._metas_by_bytes.get(rec.tobytes())
            if m is None:
                m = self._metas_by_bytes.setdefault(rec.tobytes(), meta_from_row(rec))
            self._metas[row] = m
        return m

    def projection_rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (first, N) int64 arrays of the entries ``[start, stop)`` (local entries)."""
        ext = self.extents[start:stop]
        return ext["first"].astype(np.int64), ext["N"].astype(np.int64)
