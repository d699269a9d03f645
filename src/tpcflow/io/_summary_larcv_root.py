"""``tpcflow info`` for larcv1 / larcv2 ROOT files: every product tree, streamed, none fatal.

Each product is summarised on its own; one that cannot be read is listed with ``"error"``
(the reason) and the rest of the file is still summarised.  Fields that uproot cannot
deserialise (the ROIs' memberwise-serialised ``_bb_v``) are named in ``"unreadable"``.
Per-plane sums and non-zero counts are computed per image (float64 sums), never as differences.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tpcflow.errors import DataFormatError, ProductNotFoundError

__all__ = ["is_larcv_root", "summarize_larcv_root"]

#: product types read here; any other larcv type is listed with the reason it is skipped
_READ = ("image2d", "particle", "partroi", "chstatus")


def is_larcv_root(path: Path) -> bool:
    """True if a ROOT file has a ``*_tree`` whose first branch holds a ``larcv::`` product."""
    from tpcflow.io.larcv_root import open_root_file

    with open_root_file(path) as f:
        for name, cls in f.classnames(cycle=False).items():
            if cls == "TTree" and name.endswith("_tree"):
                branches = f[name].branches
                if branches and branches[0].typename.startswith("larcv::"):
                    return True
    return False


def _event_ids(path: Path, trees: dict[str, int]) -> np.ndarray:
    from tpcflow.io.larcv_root import read_larcv2_event_ids

    for name in sorted(trees, key=lambda t: not t.startswith("image2d_")):
        ptype, _, producer = name[: -len("_tree")].partition("_")
        try:
            return read_larcv2_event_ids(path, producer, ptype=ptype)
        except DataFormatError:
            continue
    return np.full((max(trees.values(), default=0), 3), -1, np.int64)


def _image2d(path: Path, producer: str, info: dict, evs: list | None) -> None:
    from tpcflow.io.larcv_root import iterate_image2d

    voxels = total = 0
    vmin, vmax = np.inf, -np.inf
    grids, planes = set(), set()
    for e in iterate_image2d(path, producer):
        per = []
        for im in e.images:
            nz = int(np.count_nonzero(im))
            voxels += nz
            total += im.size
            if im.size:
                vmin, vmax = min(vmin, float(im.min())), max(vmax, float(im.max()))
            grids.add(im.shape)
            per.append({"voxels": nz, "sum": float(im.sum(dtype=np.float64))})
        planes.add(len(e.images))
        if evs is not None and e.entry < len(evs):
            evs[e.entry]["products"][f"image2d/{producer}"] = per
    info["projections"] = max(planes) if len(planes) == 1 else sorted(planes)
    if len(grids) == 1:
        info["number_of_voxels"] = list(next(iter(grids)))
    elif grids:
        info["number_of_voxels"] = sorted(list(g) for g in grids)
    info["voxels"] = voxels
    info["occupancy"] = voxels / total if total else 0.0
    info["value_min"] = vmin if total else None
    info["value_max"] = vmax if total else None


def _particles(path: Path, ptype: str, producer: str, info: dict, evs: list | None) -> None:
    from tpcflow.io.larcv_root import open_root_file, read_larcv2_particles

    parts = read_larcv2_particles(path, producer, ptype=ptype)
    energies = np.concatenate([p["energy_init"] for p in parts]) if parts else np.zeros(0)
    info["particles"] = int(energies.size)
    info["energy_init_min"] = float(energies.min()) if energies.size else None
    info["energy_init_max"] = float(energies.max()) if energies.size else None
    if evs is not None:
        for e, p in enumerate(parts[: len(evs)]):
            evs[e]["products"][f"{ptype}/{producer}"] = [
                {"pdg": int(a), "energy_init": float(b)} for a, b in zip(p["pdg"], p["energy_init"], strict=True)
            ]
    with open_root_file(path) as f:
        bad = _unreadable_fields(f[f"{ptype}_{producer}_tree"])
    if bad:
        info["unreadable"] = bad


def _unreadable_fields(tree) -> list[str]:
    """``"<field>: <reason>"`` for every leaf branch whose first entry uproot cannot deserialise
    (for example the ROIs' memberwise-serialised ``_bb_v``)."""
    bad = []
    for key in tree.keys(recursive=True):
        branch = tree[key]
        if branch.branches or branch.num_entries == 0:
            continue
        try:
            branch.array(entry_stop=1)
        except Exception as err:  # uproot: NotImplementedError, DeserializationError, ...
            reason = str(err).splitlines()[0][:120] if str(err) else "not readable by uproot"
            bad.append(f"{key.rsplit('/', 1)[-1]}: {type(err).__name__} ({reason})")
    return bad


def _chstatus(path: Path, producer: str, info: dict) -> None:
    from tpcflow.io.larcv_root import read_chstatus

    status = read_chstatus(path, producer, entry=0)
    info["projections"] = len(status)
    info["wires"] = [int(s.size) for s in status.values()]
    info["bad_wires"] = [int(np.count_nonzero(s != 4)) for s in status.values()]


def summarize_larcv_root(path: Path, *, events: bool = False) -> dict:
    """Summarise every product tree of a larcv1/larcv2 ROOT file (see the module docstring).

    Returns
    -------
    dict
        ``{"file", "format": "larcv1" | "larcv2", "entries", "products": [...], "events"?}``;
        a product that cannot be read carries ``"error"``, skipped types carry ``"skipped"``.
    """
    from tpcflow.io.larcv_root import image2d_version, list_larcv2_trees, open_root_file

    trees = {k: v for k, v in list_larcv2_trees(path).items() if k.endswith("_tree")}
    ids = _event_ids(path, trees) if events else None
    evs = None if ids is None else [{"entry": i, "run": int(a), "subrun": int(b), "event": int(c), "products": {}}
                                    for i, (a, b, c) in enumerate(ids)]
    versions = set()
    products = []
    for name, n in trees.items():
        ptype, _, producer = name[: -len("_tree")].partition("_")
        info: dict = {"type": ptype, "producer": producer, "entries": n}
        try:
            if ptype == "image2d":
                with open_root_file(path) as f:
                    versions.add(image2d_version(f[name]))
                _image2d(path, producer, info, evs)
            elif ptype in ("particle", "partroi"):
                _particles(path, ptype, producer, info, evs)
            elif ptype == "chstatus":
                _chstatus(path, producer, info)
            else:
                info["skipped"] = f"tpcflow does not read larcv {ptype!r} products (it reads {', '.join(_READ)})"
        except (DataFormatError, ProductNotFoundError) as err:
            info["error"] = str(err).splitlines()[0]
        products.append(info)
    # partroi (larcv::EventROI) exists only in larcv1; larcv2 calls it particle
    version = 1 if 1 in versions or any(p["type"] == "partroi" for p in products) else 2
    out = {"file": str(path), "format": f"larcv{version}", "entries": max(trees.values(), default=0),
           "products": products}
    if events:
        out["events"] = evs or []
    return out
