"""Vectorised decoding of a range of entries of one larcv3 product in one file.

Each function reads every bulk table it needs with ONE slice covering the whole
entry range, then splits the rows with numpy.  ``entry0`` is the global entry
number of local entry ``start`` (for error messages).
"""

from __future__ import annotations

import numpy as np

from tpcflow.errors import DataFormatError
from tpcflow.io.products import BBoxSet, ClusterProjection, DenseImage, ParticleSet, SparseProjection

from ._tables import ProductTables

__all__ = ["decode_range", "sparse_arrays"]


def _row_span(first: np.ndarray, n: np.ndarray) -> tuple[int, int]:
    """Return the smallest [lo, hi) holding all rows [first_i, first_i + n_i) with n_i > 0."""
    nz = n > 0
    if not nz.any():
        return 0, 0
    return int(first[nz].min()), int((first[nz] + n[nz]).max())


def _split_voxels(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split raw larcv3 Voxel rows into contiguous (ids uint64, values float32)."""
    return np.ascontiguousarray(raw["id"]), np.ascontiguousarray(raw["value"])


def _check_index(t: ProductTables, ids: np.ndarray, starts: np.ndarray, counts: np.ndarray,
                 meta_rows: np.ndarray, entries: np.ndarray) -> None:  # fmt: skip
    """Raise if any voxel index is >= the number of voxels of its projection's meta."""
    nz = counts > 0
    if not nz.any():
        return
    mx = np.maximum.reduceat(ids, starts[nz]) if ids.size else np.zeros(0, np.uint64)
    limit = t.total_voxels[meta_rows[nz]].astype(np.uint64)
    bad = np.flatnonzero(mx >= limit)
    if bad.size:
        b = int(bad[0])
        row = int(meta_rows[nz][b])
        meta = t.meta(row)
        raise DataFormatError(
            f"voxel index {int(mx[b])} is at or beyond the image size {meta.total_voxels} "
            f"(number_of_voxels {meta.number_of_voxels}) of projection {meta.projection_id}",
            file_path=t.path,
            object_path=t.object_path + "/voxels",
            entry=int(entries[nz][b]),
            field="id",
        )


def sparse_arrays(t: ProductTables, start: int, stop: int, entry0: int):
    """Read the voxels of entries [start, stop) of a sparse product.

    Returns
    -------
    ids : (M,) uint64, values : (M,) float32
        Voxels ordered entry-major, then projection.
    seg_start, seg_count : (R,) int64
        Offset and length in ``ids`` of each projection row, R = total projections.
    rows : (R,) int64
        image_meta / voxel_extents row of each projection.
    n_proj : (E,) int64
        Projections per entry.
    """
    first, n_proj = t.projection_rows(start, stop)
    if n_proj.size and (np.diff(first) == n_proj[:-1]).all():
        rows = np.arange(int(first[0]), int(first[0] + n_proj.sum()), dtype=np.int64)
    else:
        rows = np.concatenate([np.arange(f, f + n, dtype=np.int64) for f, n in zip(first, n_proj)] or [np.zeros(0, np.int64)])
    ve = t.tables["voxel_extents"][rows]
    vfirst = ve["first"].astype(np.int64)
    vcount = ve["N"].astype(np.int64)
    lo, hi = _row_span(vfirst, vcount)
    raw = t.read_bulk("voxels", lo, hi, entry0)
    ids, values = _split_voxels(raw)
    seg_start = vfirst - lo
    contiguous = vcount.size == 0 or (seg_start[0] == 0 and (np.diff(vfirst) == vcount[:-1]).all()
                                      and int(vcount.sum()) == hi - lo)  # fmt: skip
    if not contiguous:  # re-pack rows in entry/projection order
        pieces = [(int(s), int(c)) for s, c in zip(seg_start, vcount)]
        ids = np.concatenate([ids[s : s + c] for s, c in pieces]) if pieces else ids[:0]
        values = np.concatenate([values[s : s + c] for s, c in pieces]) if pieces else values[:0]
        seg_start = np.concatenate([[0], np.cumsum(vcount)[:-1]]).astype(np.int64)
    entries = np.repeat(np.arange(entry0, entry0 + len(n_proj)), n_proj)
    _check_index(t, ids, seg_start, vcount, rows, entries)
    return ids, values, seg_start, vcount, rows, n_proj


def _decode_sparse(t: ProductTables, start: int, stop: int, entry0: int) -> list:
    ids, values, seg_start, vcount, rows, n_proj = sparse_arrays(t, start, stop, entry0)
    out = []
    k = 0
    for n in n_proj:
        projs = []
        for _ in range(int(n)):
            s, c = int(seg_start[k]), int(vcount[k])
            projs.append(SparseProjection(t.meta(int(rows[k])), ids[s : s + c], values[s : s + c]))
            k += 1
        out.append(projs)
    return out


def _decode_cluster(t: ProductTables, start: int, stop: int, entry0: int) -> list:
    first, n_proj = t.projection_rows(start, stop)
    pe = t.tables["projection_extents"]
    ce = t.tables["cluster_extents"]
    plo, phi = _row_span(first, n_proj)
    pfirst = pe["first"][plo:phi].astype(np.int64)
    pn = pe["N"][plo:phi].astype(np.int64)
    clo, chi = _row_span(pfirst, pn)
    cfirst = ce["first"][clo:chi].astype(np.int64)
    cn = ce["N"][clo:chi].astype(np.int64)
    vlo, vhi = _row_span(cfirst, cn)
    ids, values = _split_voxels(t.read_bulk("voxels", vlo, vhi, entry0))
    out = []
    for e, (f, n) in enumerate(zip(first, n_proj)):
        projs = []
        for row in range(int(f), int(f + n)):
            meta = t.meta(row)
            c0, cnum = int(pe["first"][row]), int(pe["N"][row])
            clusters = []
            for c in range(c0, c0 + cnum):
                a = int(ce["first"][c]) - vlo
                b = a + int(ce["N"][c])
                cid, cval = ids[a:b], values[a:b]
                if cid.size and int(cid.max()) >= meta.total_voxels:
                    raise DataFormatError(
                        f"voxel index {int(cid.max())} of cluster {c - c0} is at or beyond the image size "
                        f"{meta.total_voxels} (number_of_voxels {meta.number_of_voxels}) of projection {meta.projection_id}",
                        file_path=t.path,
                        object_path=t.object_path + "/voxels",
                        entry=entry0 + e,
                        field="id",
                    )
                clusters.append(SparseProjection(meta, cid, cval))
            projs.append(ClusterProjection(meta, clusters, ce["ID"][c0 : c0 + cnum].astype(np.uint32)))
        out.append(projs)
    return out


def _decode_tensor(t: ProductTables, start: int, stop: int, entry0: int) -> list:
    first, n_proj = t.projection_rows(start, stop)
    ie = t.tables["image_extents"]
    plo, phi = _row_span(first, n_proj)
    ifirst = ie["first"][plo:phi].astype(np.int64)
    inum = ie["N"][plo:phi].astype(np.int64)
    lo, hi = _row_span(ifirst, inum)
    if hi > lo and "images" not in t.bulk:
        raise DataFormatError("product has images but no 'images' dataset", file_path=t.path, object_path=t.object_path)
    pix = t.read_bulk("images", lo, hi, entry0) if hi > lo else np.zeros(0, np.float32)
    out = []
    for e, (f, n) in enumerate(zip(first, n_proj)):
        imgs = []
        for row in range(int(f), int(f + n)):
            meta = t.meta(row)
            a = int(ie["first"][row]) - lo
            cnt = int(ie["N"][row])
            if cnt != meta.total_voxels:
                raise DataFormatError(
                    f"image of projection {meta.projection_id} has {cnt} pixels but its meta "
                    f"number_of_voxels {meta.number_of_voxels} needs {meta.total_voxels}",
                    file_path=t.path,
                    object_path=t.object_path + "/image_extents",
                    entry=entry0 + e,
                )
            data = pix[a : a + cnt] if cnt else np.zeros(0, np.float32)
            imgs.append(DenseImage(meta, data.reshape(meta.number_of_voxels)))
        out.append(imgs)
    return out


def clean_process(parts: np.ndarray) -> np.ndarray:
    """Zero every byte of ``process`` after its first NUL (larcv can leave garbage there), in place."""
    if parts.size:
        proc = np.ascontiguousarray(parts["process"])
        b = proc.view(np.uint8).reshape(parts.shape[0], -1)
        b[np.cumsum(b == 0, axis=1) > 0] = 0
        parts["process"] = proc
    return parts


def _decode_particle(t: ProductTables, start: int, stop: int, entry0: int) -> list:
    first, n = t.projection_rows(start, stop)
    lo, hi = _row_span(first, n)
    rows = clean_process(t.read_bulk("particles", lo, hi, entry0))
    return [ParticleSet(rows[int(f) - lo : int(f + c) - lo].copy() if c else rows[:0].copy()) for f, c in zip(first, n)]


def _decode_bbox(t: ProductTables, start: int, stop: int, entry0: int) -> list:
    first, n_proj = t.projection_rows(start, stop)
    be = t.tables["bbox_extents"]
    plo, phi = _row_span(first, n_proj)
    lo, hi = _row_span(be["first"][plo:phi].astype(np.int64), be["N"][plo:phi].astype(np.int64))
    boxes = t.read_bulk("bboxes", lo, hi, entry0)
    d = t.dim
    out = []
    for f, n in zip(first, n_proj):
        sets = []
        for row in range(int(f), int(f + n)):
            meta = t.meta(row)
            if not meta.valid and not any(meta.number_of_voxels):
                meta = None
            a = int(be["first"][row]) - lo
            b = a + int(be["N"][row])
            chunk = boxes[a:b]
            sets.append(
                BBoxSet(
                    meta,
                    np.array(chunk["centroid"], dtype=np.float64).reshape(-1, d),
                    np.array(chunk["half_length"], dtype=np.float64).reshape(-1, d),
                    np.array(chunk["rotation"], dtype=np.float64).reshape(-1, d, d),
                )
            )
        out.append(sets)
    return out


_DECODERS = {
    "sparse": _decode_sparse,
    "cluster": _decode_cluster,
    "tensor": _decode_tensor,
    "particle": _decode_particle,
    "bbox": _decode_bbox,
}


def decode_range(t: ProductTables, start: int, stop: int, entry0: int) -> list:
    """Decode local entries [start, stop) of product ``t``: one product value per entry."""
    if stop <= start:
        return []
    return _DECODERS[t.family](t, start, stop, entry0)
