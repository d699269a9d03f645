"""larcv1 and larcv2 ROOT files, read with uproot: image2d, chstatus, particles/ROIs, event ids.

Both larcv versions write one TTree per product, ``<type>_<producer>_tree``, with one branch
``<type>_<producer>_branch`` holding the event id (``larcv::EventBase``: ``_run``, ``_subrun``,
``_event``) and the product.  An ``image2d`` product is ``_image_v``, a vector of
``larcv::Image2D`` (one per plane, possibly none) with ``_img`` (``std::vector<float>``) and a
``larcv::ImageMeta``, which differs between the versions:

* **larcv1** (LArbys/LArCV, MicroBooNE): ``_origin.{x,y}`` (the bottom-left corner: lowest wire,
  lowest tick), ``_width``, ``_height``, ``_col_count``, ``_row_count``, ``_plane``;
* **larcv2** (DeepLearnPhysics/larcv2): the BBox2D members ``_id`` (plane), ``_p1`` / ``_p2``
  (lower and upper corners), ``_row_count``, ``_col_count``.

The version is told apart per tree by those member names.  Both map onto
:class:`~tpcflow.io.products.ImageMeta` in the axis order of the arrays returned here, (rows,
cols) = (time, wire): ``number_of_voxels = (rows, cols)``, ``image_sizes = (height, width)``,
``origin = (lowest y, lowest x)``, ``projection_id`` = the plane.

Memory order: ``_img`` is **column-major** in both versions, ``index(row, col) = col * rows + row``
(larcv ``ImageMeta::index``; columns are wires and rows are time).  Checked on the real files of
both versions: read column-major, the all-zero columns fall exactly on the wires that
``chstatus_wire_tree`` marks as bad (status != 4); read row-major the dead wires would be rows.
Row ``r`` covers ``y`` in ``[origin.y + r*h, origin.y + (r+1)*h)`` with ``h = height / rows``.

Time direction: a file does not record it.  By default rows are returned **as stored**
(``tick_backward=False``), which is larcv's ``IOManager`` default (``kTickForward``): row 0 is
the earliest tick.  MicroBooNE files made from tick-backward larlite data (row 0 = the latest
tick) are read as larcv1's ``IOManager(..., kTickBackward)`` reads them by passing
``tick_backward=True``: the rows of every image are reversed, so that row 0 is again the
earliest tick and the meta stays true.  Reversing by default would silently flip every
tick-forward file, so the caller must choose.

Reading streams by entry range (``entry_start``, ``entry_stop``, ``step_size`` as in uproot):
memory is bounded by ``step_size`` entries (a MicroBooNE event of 3 planes of 1008x3456 is
about 42 MB), whatever the file size.

uproot is imported inside the functions that use it (it takes about a second).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tpcflow.errors import DataFormatError, ProductNotFoundError
from tpcflow.io.products import ImageMeta

__all__ = [
    "Image2DEntry",
    "image2d_version",
    "iterate_image2d",
    "list_larcv2_trees",
    "open_root_file",
    "product_tree",
    "read_chstatus",
    "read_larcv2_event_ids",
    "read_larcv2_images",
    "read_larcv2_particles",
]


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


def product_tree(f, path, ptype: str, producer: str):
    """``(tree, branch name)`` of ``<ptype>_<producer>_tree``; ProductNotFoundError lists the trees."""
    name = f"{ptype}_{producer}_tree"
    trees = _trees(f)
    if name not in trees:
        raise ProductNotFoundError(name, available=trees, file_path=path)
    return f[name], f"{ptype}_{producer}_branch"



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
    with open_root_file(path) as f:
        tree, _ = product_tree(f, path, ptype, producer)
        name = tree.name
        base = f"{ptype}_{producer}_branch/larcv::EventBase/"
        try:
            cols = [tree[base + k].array(library="np").astype(np.int64) for k in ("_run", "_subrun", "_event")]
        except Exception as err:  # uproot KeyInFileError / deserialisation errors
            raise DataFormatError(f"cannot read the event id: {err}", file_path=path, object_path=name) from None
    return np.stack(cols, axis=1) if cols[0].size else np.zeros((0, 3), np.int64)


@dataclass
class Image2DEntry:
    """The images of one entry of an ``image2d`` tree.

    Attributes
    ----------
    entry : int
        Entry number in the tree.
    event_id : tuple of 3 int
        run, subrun, event.
    images : list of (rows, cols) float32
        One per image of ``_image_v`` (usually one per plane; may be empty).
    metas : list of ImageMeta
        One per image, in the axis order of ``images``.
    """

    entry: int
    event_id: tuple[int, int, int]
    images: list[np.ndarray]
    metas: list[ImageMeta]


#: ImageMeta members read for each version, in ``_image_v._`` of the branch
_META_MEMBERS = {
    1: ("_meta._origin.x", "_meta._origin.y", "_meta._width", "_meta._height", "_meta._row_count",
        "_meta._col_count", "_meta._plane"),
    2: ("_meta._p1.x", "_meta._p1.y", "_meta._p2.x", "_meta._p2.y", "_meta._row_count", "_meta._col_count",
        "_meta._id"),
}


def image2d_version(tree) -> int:
    """Return 1 or 2: the larcv version that wrote an ``image2d`` tree, from its ImageMeta members.

    Raises
    ------
    DataFormatError
        If the tree has neither larcv1 (``_meta._origin``) nor larcv2 (``_meta._p1``) members.
    """
    keys = tree.keys()
    if any(k.endswith("_image_v._meta._origin.x") for k in keys):
        return 1
    if any(k.endswith("_image_v._meta._p1.x") for k in keys):
        return 2
    raise DataFormatError("not a larcv1 or larcv2 image2d tree: no _meta._origin.x (larcv1) or _meta._p1.x "
                          "(larcv2) member", object_path=tree.name)


def _metas(version: int, m: dict, k: int) -> ImageMeta:
    rows, cols = int(m["_meta._row_count"][k]), int(m["_meta._col_count"][k])
    if version == 1:
        x0, y0 = float(m["_meta._origin.x"][k]), float(m["_meta._origin.y"][k])
        width, height, plane = float(m["_meta._width"][k]), float(m["_meta._height"][k]), int(m["_meta._plane"][k])
    else:
        x0, y0 = float(m["_meta._p1.x"][k]), float(m["_meta._p1.y"][k])
        width, height = float(m["_meta._p2.x"][k]) - x0, float(m["_meta._p2.y"][k]) - y0
        plane = int(m["_meta._id"][k])
    return ImageMeta(projection_id=plane, number_of_voxels=(rows, cols), image_sizes=(height, width), origin=(y0, x0))


def iterate_image2d(path, producer: str = "wire", *, entry_start: int = 0, entry_stop: int | None = None,
                    step_size: int = 4, tick_backward: bool = False) -> Iterator[Image2DEntry]:
    """Yield the images of ``image2d_<producer>_tree`` entry by entry, reading ``step_size`` at a time.

    Parameters
    ----------
    path : str or Path
        larcv1 or larcv2 ROOT file.
    producer : str
        Producer name: ``wire``, ``data``, ...
    entry_start, entry_stop : int
        Entry range, as in uproot (``entry_stop=None``: to the end; clipped to the tree).
    step_size : int
        Entries per read: the memory bound (a MicroBooNE event is about 42 MB).
    tick_backward : bool
        Reverse the rows of every image (larcv ``IOManager`` ``kTickBackward``); see the module
        docstring for the default.

    Yields
    ------
    Image2DEntry
        ``images`` are (rows, cols) float32, C-contiguous; an entry without images yields empty lists.

    Raises
    ------
    DataFormatError
        Missing or non-ROOT file; a tree that is not larcv1/larcv2 image2d; an ``_img`` whose length
        is not ``rows * cols`` (naming the entry and the image).
    ProductNotFoundError
        No ``image2d_<producer>_tree``; the message lists the trees of the file.
    """
    if step_size < 1:
        raise ValueError(f"step_size must be >= 1, but got {step_size}")
    with open_root_file(path) as f:
        tree, branch = product_tree(f, path, "image2d", producer)
        version = image2d_version(tree)
        pre = f"{branch}/_image_v/_image_v."
        names = ("_img", *_META_MEMBERS[version])
        ids = [f"{branch}/larcv::EventBase/{k}" for k in ("_run", "_subrun", "_event")]
        stop = tree.num_entries if entry_stop is None else min(int(entry_stop), tree.num_entries)
        for start in range(max(0, int(entry_start)), stop, step_size):
            end = min(start + step_size, stop)
            try:
                # library="np": about 2x faster than awkward for vector<vector<float>> (an object
                # array of STLVectors per entry, converted one image at a time)
                arr = tree.arrays([pre + n for n in names] + ids, entry_start=start, entry_stop=end,
                                  library="np", how=dict)
            except Exception as err:  # uproot KeyInFileError / deserialisation errors
                raise DataFormatError(f"cannot read the image2d branches: {err}", file_path=path,
                                      object_path=tree.name, entry=start) from None
            eid = np.stack([np.asarray(arr[k]).astype(np.int64) for k in ids], axis=1)
            for i in range(end - start):
                m = {n: np.asarray(arr[pre + n][i]) for n in names[1:]}
                images, metas = [], []
                for k, img in enumerate(arr[pre + "_img"][i]):
                    meta = _metas(version, m, k)
                    rows, cols = meta.number_of_voxels
                    flat = np.asarray(img, dtype=np.float32)
                    if flat.size != rows * cols:
                        raise DataFormatError(
                            f"image {k} _img holds {flat.size} values, expected rows*cols = {rows}*{cols}",
                            file_path=path, object_path=tree.name, entry=start + i)
                    image = flat.reshape(cols, rows).T  # column-major: index = col * rows + row
                    images.append(np.ascontiguousarray(image[::-1] if tick_backward else image))
                    metas.append(meta)
                yield Image2DEntry(start + i, tuple(int(x) for x in eid[i]), images, metas)


def read_larcv2_images(path, producer: str = "wire", *, entry_start: int = 0, entry_stop: int | None = None,
                       tick_backward: bool = False) -> tuple[np.ndarray, list[list[ImageMeta]]]:
    """Read the entries ``[entry_start, entry_stop)`` of a larcv1/larcv2 ``image2d_<producer>_tree`` into one array.

    Parameters
    ----------
    path : str or Path
        larcv1 or larcv2 ROOT file (e.g. ``example_larcv.root``).
    producer : str
        Producer name: ``wire``, ``data``, ...
    entry_start, entry_stop, tick_backward
        As :func:`iterate_image2d`; use that for large files (this array holds the whole range).

    Returns
    -------
    images : (E, P, R, C) float32
        Entries, planes, rows (time axis, y), columns (wire axis, x); ``P = R = C = 0`` when no
        entry holds an image.
    metas : list of list of ImageMeta
        ``metas[entry][plane]``, in the axis order of ``images``.

    Raises
    ------
    DataFormatError
        As :func:`iterate_image2d`; also planes whose count or size differs between planes or
        entries (read those with :func:`iterate_image2d`).
    ProductNotFoundError
        No ``image2d_<producer>_tree``; the message lists the trees of the file.

    Notes
    -----
    Source: larcv ``Image2D`` / ``ImageMeta`` (LArbys/LArCV, DeepLearnPhysics/larcv2), stored
    column-major (see the module docstring for the check against dead wires).
    """
    entries = list(iterate_image2d(path, producer, entry_start=entry_start, entry_stop=entry_stop,
                                   tick_backward=tick_backward))
    shapes = {tuple(im.shape for im in e.images) for e in entries}
    if len(shapes) > 1 or any(len({im for im in s}) > 1 for s in shapes):
        raise DataFormatError(
            f"image2d planes differ in count or size between planes or entries ({sorted(shapes)[:3]}); "
            "read them one entry at a time with iterate_image2d", file_path=path,
            object_path=f"image2d_{producer}_tree")
    (planes,) = shapes or {()}
    shape = (len(planes), *(planes[0] if planes else (0, 0)))
    images = np.zeros((len(entries), *shape), np.float32)
    for i, e in enumerate(entries):
        for p, im in enumerate(e.images):
            images[i, p] = im
    return images, [e.metas for e in entries]


def read_chstatus(path, producer: str = "wire", entry: int = 0) -> dict[int, np.ndarray]:
    """Read one entry of ``chstatus_<producer>_tree``: the status of every wire, per plane.

    Returns
    -------
    dict
        plane -> (wires,) int16 status (larcv ``ChStatus``: 4 is good; other values mark bad,
        dead or noisy channels).

    Raises
    ------
    DataFormatError, ProductNotFoundError
        As :func:`iterate_image2d`; also an entry out of range.
    """
    with open_root_file(path) as f:
        tree, _ = product_tree(f, path, "chstatus", producer)
        name = tree.name
        if not 0 <= entry < tree.num_entries:
            raise DataFormatError(f"entry {entry} is out of range: the tree has {tree.num_entries} entries",
                                  file_path=path, object_path=name, entry=entry)
        try:
            status = tree[f"chstatus_{producer}_branch/_status_m"].array(library="np", entry_start=entry,
                                                                         entry_stop=entry + 1)[0]
            return {int(p): np.asarray(status[p].member("_status_v"), dtype=np.int16) for p in status.keys()}
        except Exception as err:  # uproot deserialisation errors
            raise DataFormatError(f"cannot read the channel status: {err}", file_path=path, object_path=name,
                                  entry=entry) from None


def read_larcv2_particles(path, producer: str, *, ptype: str = "particle") -> list[dict[str, np.ndarray]]:
    """Read ``pdg`` and ``energy_init`` of every particle of a ``<ptype>_<producer>_tree``.

    ``ptype`` is ``particle`` (larcv2 ``EventParticle``) or ``partroi`` (larcv1 ``EventROI``,
    whose ROIs hold the same ``_pdg`` and ``_energy_init`` members).

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
    with open_root_file(path) as f:
        tree, _ = product_tree(f, path, ptype, producer)
        name = tree.name
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
