"""larcv2 ROOT images: read ``image2d_<producer>_tree`` with uproot.

larcv2's IOManager writes one TTree per product, ``<type>_<producer>_tree``,
with one branch ``<type>_<producer>_branch`` holding a ``larcv::EventImage2D``:
the event id (``larcv::EventBase``: ``_run``, ``_subrun``, ``_event``) and
``_image_v``, a vector of ``larcv::Image2D`` (one per plane).  Each Image2D has
``_img`` (``std::vector<float>``) and a ``larcv::ImageMeta`` with ``_id``
(plane), ``_p1`` / ``_p2`` (lower and upper corners, x = wire axis, y = time
axis), ``_row_count``, ``_col_count`` and ``_unit``.

Memory order: larcv2 stores ``_img`` **column-major**, ``index(row, col) = col *
rows + row`` (larcv2 ``ImageMeta::index``; ``Image2D`` columns are wires and
rows are time).  Checked on ``example_larcv.root``: read column-major, its
all-zero columns fall exactly on the wires that ``chstatus_wire_tree`` marks
as bad (status != 4), while no row is all zero; read row-major the dead
wires would be rows.  Row ``r`` covers ``y`` in ``[p1.y + r*h, p1.y + (r+1)*h)``
with ``h = (p2.y - p1.y) / rows``; column ``c`` covers ``x`` from ``p1.x + c*w``.

uproot is imported inside the functions that use it (it takes about a second).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tpcflow.errors import DataFormatError, ProductNotFoundError
from tpcflow.io.products import ImageMeta

__all__ = ["list_larcv2_trees", "open_root_file", "read_larcv2_event_ids", "read_larcv2_images", "read_larcv2_particles"]


def open_root_file(path):
    """Open a ROOT file with uproot, turning missing / non-ROOT files into :class:`DataFormatError`."""
    import uproot  # imported here: it takes about a second
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"file not found: {str(path)!r}", file_path=path)
    if path.is_dir():
        raise DataFormatError(f"is a directory, not a ROOT file: {str(path)!r}", file_path=path)
    try:
        return uproot.open(path)
    except (ValueError, OSError, TypeError) as err:  # uproot: "not a ROOT file: first four bytes are ..."
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataFormatError(f"cannot open as ROOT: {first}", file_path=path) from None


def _trees(f) -> list[str]:
    return sorted({k.split(";")[0] for k, c in f.classnames().items() if c == "TTree"})


def list_larcv2_trees(path) -> dict[str, int]:
    """Return ``{tree name: entries}`` of every TTree in a (larcv2) ROOT file."""
    with open_root_file(path) as f:
        return {name: int(f[name].num_entries) for name in _trees(f)}


def _image_tree(f, path, producer: str):
    name = f"image2d_{producer}_tree"
    trees = _trees(f)
    if name not in trees:
        raise ProductNotFoundError(name, available=trees, file_path=path)
    return f[name], f"image2d_{producer}_branch"


def read_larcv2_event_ids(path, producer: str = "wire", *, ptype: str = "image2d") -> np.ndarray:
    """Read the event ids of ``<ptype>_<producer>_tree`` (any larcv2 product tree).

    Returns
    -------
    (E, 3) int64
        run, subrun, event (larcv2 ``EventBase``).

    Raises
    ------
    DataFormatError
        Missing or non-ROOT file, or a tree without ``larcv::EventBase``.
    ProductNotFoundError
        No ``<ptype>_<producer>_tree``; the message lists the trees.
    """
    name = f"{ptype}_{producer}_tree"
    with open_root_file(path) as f:
        trees = _trees(f)
        if name not in trees:
            raise ProductNotFoundError(name, available=trees, file_path=path)
        tree = f[name]
        base = f"{ptype}_{producer}_branch/larcv::EventBase/"
        try:
            cols = [tree[base + k].array(library="np").astype(np.int64) for k in ("_run", "_subrun", "_event")]
        except Exception as err:  # uproot KeyInFileError / deserialisation errors
            raise DataFormatError(f"cannot read the event id: {err}", file_path=path, object_path=name) from None
    return np.stack(cols, axis=1) if cols[0].size else np.zeros((0, 3), np.int64)


def read_larcv2_images(path, producer: str = "wire") -> tuple[np.ndarray, list[list[ImageMeta]]]:
    """Read every entry of a larcv2 ``image2d_<producer>_tree`` into one dense array.

    Parameters
    ----------
    path : str or Path
        larcv2 ROOT file (e.g. ``example_larcv.root``).
    producer : str
        Producer name: ``wire``, ``data``, ...

    Returns
    -------
    images : (E, P, R, C) float32
        Entries, planes, rows (time axis, y), columns (wire axis, x).
    metas : list of list of ImageMeta
        ``metas[entry][plane]``; ``projection_id`` = larcv2 ``_meta._id``,
        ``number_of_voxels = (rows, cols)``, ``image_sizes = (p2.y - p1.y, p2.x - p1.x)``,
        ``origin = (p1.y, p1.x)``, in the axis order of ``images``.

    Raises
    ------
    DataFormatError
        Missing or non-ROOT file; planes whose size differs between planes or entries;
        an ``_img`` whose length is not ``rows * cols``.
    ProductNotFoundError
        No ``image2d_<producer>_tree``; the message lists the trees of the file.

    Notes
    -----
    Source: larcv2 ``Image2D`` / ``ImageMeta`` (DeepLearnPhysics/larcv2), stored
    column-major (see the module docstring for the check against dead wires).
    """
    import awkward as ak
    with open_root_file(path) as f:
        tree, branch = _image_tree(f, path, producer)
        pre = f"{branch}/_image_v/_image_v."
        names = ["_img", "_meta._id", "_meta._p1.x", "_meta._p1.y", "_meta._p2.x", "_meta._p2.y",
                 "_meta._row_count", "_meta._col_count"]
        try:
            arr = tree.arrays([pre + n for n in names], library="ak", how=dict)
        except Exception as err:  # uproot KeyInFileError / deserialisation errors
            raise DataFormatError(f"cannot read the image2d branches: {err}", file_path=path,
                                  object_path=tree.name) from None
        where = tree.name
    d = {n: arr[pre + n] for n in names}
    n_entries = len(d["_img"])
    nplanes = ak.to_numpy(ak.num(d["_meta._row_count"], axis=1))
    rows = ak.to_numpy(ak.flatten(d["_meta._row_count"])).astype(np.int64)
    cols = ak.to_numpy(ak.flatten(d["_meta._col_count"])).astype(np.int64)
    if n_entries == 0:
        return np.zeros((0, 0, 0, 0), np.float32), []
    if len(set(nplanes.tolist())) != 1 or len(set(rows.tolist())) != 1 or len(set(cols.tolist())) != 1:
        raise DataFormatError(
            f"image2d planes differ in count or size between entries (planes {sorted(set(nplanes.tolist()))}, "
            f"rows {sorted(set(rows.tolist()))}, cols {sorted(set(cols.tolist()))}); read them one by one",
            file_path=path, object_path=where,
        )
    P, R, C = int(nplanes[0]), int(rows[0]), int(cols[0])
    lengths = ak.to_numpy(ak.flatten(ak.num(d["_img"], axis=2)))
    bad = np.flatnonzero(lengths != R * C)
    if bad.size:
        e, p = divmod(int(bad[0]), max(P, 1))
        raise DataFormatError(f"image _img holds {int(lengths[bad[0]])} values, expected rows*cols = {R * C}"
                              f" (plane {p})", file_path=path, object_path=where, entry=e)
    flat = ak.to_numpy(ak.flatten(d["_img"], axis=None)).astype(np.float32, copy=False)
    images = np.ascontiguousarray(flat.reshape(n_entries, P, C, R).transpose(0, 1, 3, 2))
    m = {n: ak.to_numpy(ak.flatten(d[n])).reshape(n_entries, P) for n in names[1:6]}
    metas = [
        [
            ImageMeta(
                projection_id=int(m["_meta._id"][e, p]),
                number_of_voxels=(R, C),
                image_sizes=(float(m["_meta._p2.y"][e, p] - m["_meta._p1.y"][e, p]),
                             float(m["_meta._p2.x"][e, p] - m["_meta._p1.x"][e, p])),
                origin=(float(m["_meta._p1.y"][e, p]), float(m["_meta._p1.x"][e, p])),
            )
            for p in range(P)
        ]
        for e in range(n_entries)
    ]
    return images, metas


def read_larcv2_particles(path, producer: str) -> list[dict[str, np.ndarray]]:
    """Read ``pdg`` and ``energy_init`` of every particle of a larcv2 ``particle_<producer>_tree``.

    Returns
    -------
    list of dict
        One dict per entry: ``{"pdg": (K,) int32, "energy_init": (K,) float64 [MeV]}``.

    Raises
    ------
    DataFormatError, ProductNotFoundError
        As :func:`read_larcv2_images`.
    """
    import awkward as ak
    name = f"particle_{producer}_tree"
    with open_root_file(path) as f:
        trees = _trees(f)
        if name not in trees:
            raise ProductNotFoundError(name, available=trees, file_path=path)
        tree = f[name]
        keys = {k.rsplit(".", 1)[-1]: k for k in tree.keys() if k.endswith(("_part_v._pdg", "_part_v._energy_init"))}
        if set(keys) != {"_pdg", "_energy_init"}:
            raise DataFormatError("no _part_v._pdg / _part_v._energy_init branches", file_path=path,
                                  object_path=name)
        try:
            arr = tree.arrays(list(keys.values()), library="ak", how=dict)
        except Exception as err:  # uproot deserialisation errors
            raise DataFormatError(f"cannot read particles: {err}", file_path=path, object_path=name) from None
    pdg, energy = arr[keys["_pdg"]], arr[keys["_energy_init"]]
    return [
        {"pdg": ak.to_numpy(pdg[e]).astype(np.int32), "energy_init": ak.to_numpy(energy[e]).astype(np.float64)}
        for e in range(len(pdg))
    ]
