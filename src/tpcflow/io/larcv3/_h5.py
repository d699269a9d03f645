"""h5py plumbing for the larcv3 reader and writer: safe opening, exact HDF5 types.

Every h5py ``OSError`` / ``KeyError`` is turned into a :class:`tpcflow.errors`
type that names the file, so no deep h5py traceback reaches the user.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from tpcflow.errors import DataFormatError

__all__ = ["create_dataset", "h5_type", "open_h5"]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

# Raw-data chunk cache per dataset: larcv voxel chunks are 16 kB; keep a few MB of them.
_RDCC_NBYTES = 8 * 1024 * 1024
_RDCC_NSLOTS = 10007


def _has_hdf5_signature(path: Path) -> bool:
    """Return True if the HDF5 signature is at offset 0, 512, 1024, ... (HDF5 spec, superblock search)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        offset = 0
        while offset + 8 <= size:
            fh.seek(offset)
            if fh.read(8) == _HDF5_MAGIC:
                return True
            offset = 512 if offset == 0 else offset * 2
    return False


def open_h5(path: Path) -> h5py.File:
    """Open ``path`` read-only with h5py.

    Raises
    ------
    DataFormatError
        If the file is missing, not HDF5, truncated or otherwise unreadable; the
        message names the file.
    """
    path = Path(path)
    if not path.exists():
        err = DataFormatError("larcv3 file not found", file_path=path)
        raise err
    if path.is_dir():
        raise DataFormatError("larcv3 path is a directory, not a file", file_path=path)
    try:
        if not _has_hdf5_signature(path):
            raise DataFormatError("not an HDF5 file: no HDF5 signature found", file_path=path)
        return h5py.File(path, "r", rdcc_nbytes=_RDCC_NBYTES, rdcc_nslots=_RDCC_NSLOTS)
    except DataFormatError:
        raise
    except (OSError, RuntimeError, ValueError) as err:
        msg = str(err)
        if "truncated" in msg.lower() or "eof" in msg.lower():
            what = "truncated HDF5 file: it ends before the end of its data"
        else:
            what = f"cannot open HDF5 file ({msg.splitlines()[0] if msg else type(err).__name__})"
        raise DataFormatError(what, file_path=path) from None


def h5_type(dtype: np.dtype) -> h5py.h5t.TypeID:
    """Return the HDF5 type larcv3 uses for numpy ``dtype``.

    Same as h5py's mapping, except that fixed byte strings are NUL-terminated
    ASCII (larcv3 ``Particle::_process``), not NUL-padded, and compound members
    keep their offsets and the struct's itemsize.
    """
    dtype = np.dtype(dtype)
    if dtype.names is None:
        if dtype.kind == "S":
            tid = h5py.h5t.C_S1.copy()
            tid.set_size(dtype.itemsize)
            tid.set_strpad(h5py.h5t.STR_NULLTERM)
            tid.set_cset(h5py.h5t.CSET_ASCII)
            return tid
        if dtype.subdtype is not None:
            base, shape = dtype.subdtype
            return h5py.h5t.array_create(h5_type(base), shape)
        return h5py.h5t.py_create(dtype)
    tid = h5py.h5t.create(h5py.h5t.COMPOUND, dtype.itemsize)
    for name in dtype.names:
        sub, offset = dtype.fields[name][:2]
        tid.insert(name.encode("ascii"), offset, h5_type(sub))
    return tid


def create_dataset(
    group: h5py.Group, name: str, dtype: np.dtype, chunk: int, compression: int
) -> h5py.Dataset:
    """Create an empty, unlimited, chunked 1-D dataset the way larcv3 ``initialize()`` does.

    ``H5Screate_simple(1, {0}, {H5S_UNLIMITED})``, ``H5Pset_chunk(chunk)`` and,
    when ``compression > 0``, ``H5Pset_deflate(compression)``.
    """
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_chunk((int(chunk),))
    dcpl.set_obj_track_times(False)  # no timestamps: the same events give the same bytes
    if compression:
        dcpl.set_deflate(int(compression))
    space = h5py.h5s.create_simple((0,), (h5py.h5s.UNLIMITED,))
    dsid = h5py.h5d.create(group.id, name.encode("ascii"), h5_type(dtype), space, dcpl=dcpl)
    return h5py.Dataset(dsid)


def append_rows(dset: h5py.Dataset, rows: np.ndarray) -> None:
    """Append ``rows`` (matching dtype) at the end of the 1-D dataset ``dset``."""
    n = int(rows.shape[0])
    if n == 0:
        return
    start = dset.shape[0]
    dset.resize((start + n,))
    dset.write_direct(np.ascontiguousarray(rows), dest_sel=np.s_[start : start + n])


def remove_quietly(path: Path) -> None:
    """Remove ``path`` if it exists (temp file clean-up)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
