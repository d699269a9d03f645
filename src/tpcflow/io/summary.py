"""What ``tpcflow info`` reports about a file: larcv3 HDF5, larcv1 / larcv2 ROOT or plain ROOT.

:func:`summarize_file` detects the format from the file's first bytes (HDF5
signature, or ``root``) and returns a JSON-ready dict; :func:`format_text`
renders it as aligned text.  The larcv3 summary has the shape::

    {"file": ..., "format": "larcv3", "entries": 5,
     "products": [{"type": "sparse2d", "producer": "sbndwire", "projections": 3,
                   "voxels": 276764, "occupancy": 0.0070, "value_min": 5.0, ...}, ...],
     "events": [{"entry": 0, "run": 1, "subrun": 0, "event": 7,
                 "products": {"sparse2d/sbndwire": [{"voxels": 18000, "sum": 123456.7}, ...]}}]}

Per event and product: sparse and cluster products give one ``{"voxels", "sum"}``
per projection (clusters: over all clusters of the projection, plus ``clusters``);
dense images give ``{"voxels"`` (non-zero), ``"sum"}``; particle products one
``{"pdg", "energy_init", ...}`` per particle; bbox products ``{"boxes"}`` per projection.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from tpcflow.errors import DataFormatError
from tpcflow.io.products import ClusterProjection, DenseImage, ParticleSet

__all__ = ["detect_format", "format_text", "summarize_file"]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_CHUNK = 64  # entries per read for non-sparse products


def detect_format(path) -> str:
    """Return ``"hdf5"`` or ``"root"`` from the file signature.

    Raises
    ------
    DataFormatError
        Missing file, a directory, or neither an HDF5 nor a ROOT signature.
    """
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"file not found: {str(path)!r}", file_path=path)
    if path.is_dir():
        raise DataFormatError(f"is a directory, not a data file: {str(path)!r}", file_path=path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as err:
        raise DataFormatError(f"cannot read file: {err.strerror}", file_path=path) from None
    if head.startswith(b"root"):
        return "root"
    if head == _HDF5_MAGIC:
        return "hdf5"
    raise DataFormatError(
        f"not a larcv3 (HDF5) or ROOT file: first bytes are {head[:4]!r}", file_path=path
    )


def _f(x) -> float:
    x = float(x)
    return x if math.isfinite(x) else None  # type: ignore[return-value]


# -- larcv3 -----------------------------------------------------------------------------------
def _sparse_summary(r, key: str, info: dict, events: list | None) -> None:
    n = len(r)
    total, vmin, vmax, vsum = 0, math.inf, -math.inf, 0.0
    counts_all = []
    plane = None
    for start in range(0, n, 256):
        b = r.read_sparse_block(key, start, min(n, start + 256))
        counts_all.append(b.counts)
        if b.metas and plane is None:
            plane = b.metas[0]
        if b.values.size:
            vmin, vmax = min(vmin, float(b.values.min())), max(vmax, float(b.values.max()))
            vsum += float(b.values.sum(dtype=np.float64))
        total += int(b.values.size)
        if events is not None:
            E, P = b.counts.shape
            # each projection's sum on its own (float64), never a difference of running sums, which
            # loses every later sum after a value near FLT_MAX
            segment = np.repeat(np.arange(E * P), b.counts.ravel())
            sums = np.bincount(segment, weights=b.values.astype(np.float64), minlength=E * P)
            held = b.projections if b.projections is not None else np.full(E, P)
            for e in range(E):
                events[start + e]["products"][key] = [
                    {"voxels": int(b.counts[e, p]), "sum": float(sums[e * P + p])} for p in range(int(held[e]))
                ]
    counts = np.concatenate(counts_all) if counts_all else np.zeros((0, 0), np.int64)
    info["voxels"] = total
    info["voxels_per_projection"] = float(counts.mean()) if counts.size else 0.0
    if plane is not None:
        info["number_of_voxels"] = list(plane.number_of_voxels)
        info["occupancy"] = info["voxels_per_projection"] / plane.total_voxels
    info["value_min"] = _f(vmin) if total else None
    info["value_max"] = _f(vmax) if total else None
    info["value_sum"] = vsum


def _other_summary(r, key: str, info: dict, events: list | None) -> None:
    n = len(r)
    vmin, vmax, total, nitems = math.inf, -math.inf, 0, 0
    plane = None
    for start in range(0, n, _CHUNK):
        for ev in r.read_range(start, min(n, start + _CHUNK), products=[key]):
            prod = ev.products[key]
            rows: list[dict] = []
            if isinstance(prod, ParticleSet):
                for d in prod.to_dicts():
                    rows.append({"pdg": d.get("pdg"), "energy_init": d.get("energy_init"), "id": d.get("id"),
                                 "trackid": d.get("trackid"), "parent_trackid": d.get("parent_trackid")})
                    if d.get("energy_init") is not None:
                        vmin, vmax = min(vmin, d["energy_init"]), max(vmax, d["energy_init"])
                nitems += len(prod)
            else:
                for proj in prod:
                    if isinstance(proj, ClusterProjection):
                        vals = [c.values for c in proj.clusters]
                        v = np.concatenate(vals) if vals else np.zeros(0, np.float32)
                        rows.append({"voxels": int(v.size), "sum": float(v.sum(dtype=np.float64)),
                                     "clusters": len(proj.clusters)})
                        nitems += len(proj.clusters)
                        plane = plane or proj.meta
                    elif isinstance(proj, DenseImage):
                        v = proj.data[proj.data != 0]
                        rows.append({"voxels": int(v.size), "sum": float(proj.data.sum(dtype=np.float64))})
                        plane = plane or proj.meta
                    else:  # BBoxSet
                        rows.append({"boxes": int(proj.centroids.shape[0])})
                        nitems += int(proj.centroids.shape[0])
                        v = np.zeros(0)
                    total += int(v.size)
                    if v.size:
                        vmin, vmax = min(vmin, float(v.min())), max(vmax, float(v.max()))
            if events is not None:
                events[ev.entry]["products"][key] = rows
    if info["type"] == "particle":
        info["particles"] = nitems
    elif info["type"].startswith("bbox"):
        info["boxes"] = nitems
    else:
        info["voxels"] = total
        if info["type"].startswith("cluster"):
            info["clusters"] = nitems
        if plane is not None and n and info["projections"]:
            info["number_of_voxels"] = list(plane.number_of_voxels)
            info["occupancy"] = total / (n * info["projections"] * plane.total_voxels)
    label = "energy_init" if info["type"] == "particle" else "value"
    info[f"{label}_min"] = _f(vmin) if vmin <= vmax else None
    info[f"{label}_max"] = _f(vmax) if vmin <= vmax else None


def _larcv3(path: Path, events: bool) -> dict:
    from tpcflow.io.larcv3 import open_larcv3

    with open_larcv3(path) as r:
        ids = r.event_ids
        evs = None
        if events:
            evs = [{"entry": i, "run": int(a), "subrun": int(b), "event": int(c), "products": {}}
                   for i, (a, b, c) in enumerate(ids)]
        products = []
        for p in r.products:
            info = {"type": p.type, "producer": p.producer, "projections": p.projections}
            if p.type.startswith("sparse"):
                _sparse_summary(r, p.key, info, evs)
            else:
                _other_summary(r, p.key, info, evs)
            products.append(info)
        out = {"file": str(path), "format": "larcv3", "entries": len(r), "products": products}
    if evs is not None:
        out["events"] = evs
    return out


# -- ROOT -------------------------------------------------------------------------------------
def _plain_root(path: Path) -> dict:
    try:
        from tpcflow.io.root import summarize
    except ImportError:  # the ROOT module is optional here: fall back to a listing
        summarize = None
    if summarize is not None:
        d = summarize(path)
        d.update({"file": str(path), "format": "root"})
        return d
    from tpcflow.io.larcv_root import list_larcv2_trees

    trees = list_larcv2_trees(path)
    return {"file": str(path), "format": "root", "trees": trees, "entries": max(trees.values(), default=0)}


def summarize_file(path, *, events: bool = False) -> dict:
    """Summarise a larcv3, larcv2 or plain ROOT file (see the module docstring for the shape).

    Raises
    ------
    DataFormatError
        Missing file, unknown format, truncated or invalid file.
    """
    path = Path(path)
    kind = detect_format(path)
    if kind == "hdf5":
        return _larcv3(path, events)
    from tpcflow.io._summary_larcv_root import is_larcv_root, summarize_larcv_root

    if is_larcv_root(path):
        return summarize_larcv_root(path, events=events)
    return _plain_root(path)


# -- text -------------------------------------------------------------------------------------
def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_text(d: dict) -> str:
    """Render a :func:`summarize_file` dict as aligned text."""
    if d.get("format") == "root" and "specs" in d:
        from tpcflow.io.root import format_summary

        return format_summary(d, max_branches=40)
    if d.get("format") == "root":
        return f"{d['file']}: ROOT file\n" + "\n".join(f"  {k}: {v} entries" for k, v in d["trees"].items())
    lines = [f"{d['file']}: {d['format']}, {d['entries']} entries, {len(d['products'])} products"]
    header = ["product", "proj", "grid", "voxels", "occupancy", "min", "max"]
    rows = []
    for p in d["products"]:
        grid = "x".join(str(n) for n in p.get("number_of_voxels", [])) or "-"
        count = p.get("voxels", p.get("particles", p.get("boxes")))
        unit = "" if "voxels" in p or count is None else (" particles" if "particles" in p else " boxes")
        if "bad_wires" in p:  # chstatus
            count, unit = sum(p["bad_wires"]), f" bad of {sum(p['wires']):,} wires"
        occ = p.get("occupancy")
        rows.append([
            f"{p['type']}/{p['producer']}", _fmt(p.get("projections")), grid,
            (f"{count:,}" if isinstance(count, int) else _fmt(count)) + unit,
            f"{occ:.3%}" if occ is not None else "-",
            _fmt(p.get("value_min", p.get("energy_init_min"))), _fmt(p.get("value_max", p.get("energy_init_max"))),
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in [header, *rows]:
        lines.append("  " + "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())
    for p in d["products"]:
        for key, label in (("error", "not read"), ("skipped", "skipped"), ("unreadable", "fields not read")):
            if p.get(key):
                what = "; ".join(p[key]) if isinstance(p[key], list) else p[key]
                lines.append(f"  {p['type']}/{p['producer']}: {label}: {what}")
    for ev in d.get("events", []):
        lines.append(f"  entry {ev['entry']}: run {ev['run']} subrun {ev['subrun']} event {ev['event']}")
        for key, items in ev["products"].items():
            if items and "pdg" in items[0]:
                desc = ", ".join(f"pdg {it['pdg']} E={_fmt(it['energy_init'])}" for it in items)
            elif items and "boxes" in items[0]:
                desc = ", ".join(f"{it['boxes']} boxes" for it in items)
            else:
                desc = ", ".join(f"{it['voxels']:,} vox sum {it['sum']:.1f}" for it in items)
            lines.append(f"    {key}: {desc or '(empty)'}")
    return "\n".join(lines)
