"""Encode tpcflow products into the rows of larcv3 tables (the writer's half of the schema).

Each ``encode_*`` function takes one entry's product value and the current row
counts of the product's tables, and returns the new rows per table.  Inputs are
checked here: a bad value raises :class:`tpcflow.errors.DataFormatError`.
"""

from __future__ import annotations

import numpy as np

from tpcflow.errors import DataFormatError
from tpcflow.io.products import BBoxSet, ClusterProjection, DenseImage, ImageMeta, ParticleSet, SparseProjection

from .schema import (
    BBOX_DTYPES,
    EXTENTS_DTYPE,
    IDEXTENTS_DTYPE,
    IMAGE_META_DTYPES,
    PARTICLE_DTYPE,
    VOXEL_DTYPE,
)

__all__ = ["encode", "extents_row", "meta_rows"]


class _Ctx:
    """Where the value being encoded comes from (for error messages)."""

    def __init__(self, path, key: str, entry: int):
        self.path, self.key, self.entry = path, key, entry

    def error(self, what: str, field: str | None = None) -> DataFormatError:
        return DataFormatError(what, file_path=self.path, object_path=self.key, entry=self.entry, field=field)


def extents_row(first: int, n: int) -> np.ndarray:
    row = np.zeros(1, EXTENTS_DTYPE)
    row["first"], row["N"] = first, n
    return row


def _idextents(firsts, ns, ids) -> np.ndarray:
    rows = np.zeros(len(ns), IDEXTENTS_DTYPE)
    rows["first"], rows["N"], rows["ID"] = firsts, ns, ids
    return rows


def meta_rows(metas: list[ImageMeta | None], dim: int, ctx: _Ctx) -> np.ndarray:
    """Return image_meta rows (ImageMeta<dim>); None gives an all-zero, invalid meta."""
    rows = np.zeros(len(metas), IMAGE_META_DTYPES[dim])
    for i, m in enumerate(metas):
        if m is None:
            continue
        if not isinstance(m, ImageMeta):
            raise ctx.error(f"meta must be an ImageMeta, but got {type(m).__name__}", "meta")
        if not (len(m.number_of_voxels) == len(m.image_sizes) == len(m.origin) == dim):
            raise ctx.error(
                f"meta has {len(m.number_of_voxels)} axes (number_of_voxels {m.number_of_voxels}) but the product is {dim}-D",
                "meta",
            )
        if any(int(n) < 0 for n in m.number_of_voxels):
            raise ctx.error(f"meta number_of_voxels {m.number_of_voxels} must be >= 0", "meta")
        rows[i]["valid"] = 1 if m.valid else 0
        rows[i]["projection_id"] = int(m.projection_id)
        rows[i]["image_sizes"] = m.image_sizes
        rows[i]["number_of_voxels"] = m.number_of_voxels
        rows[i]["origin"] = m.origin
    return rows


def _voxels(index, values, meta: ImageMeta, ctx: _Ctx, what: str) -> np.ndarray:
    """Check and sort one voxel set; return VOXEL_DTYPE rows (ids ascending)."""
    index = np.asarray(index)
    values = np.asarray(values)
    if index.ndim != 1 or values.ndim != 1 or index.shape != values.shape:
        raise ctx.error(f"{what}: index {index.shape} and values {values.shape} must be 1-D of equal length", "index")
    if index.size and index.dtype.kind not in "ui":
        raise ctx.error(f"{what}: index must be integers, but got dtype {index.dtype}", "index")
    if index.size and index.dtype.kind == "i" and int(index.min()) < 0:
        raise ctx.error(f"{what}: voxel index {int(index.min())} is negative", "index")
    index = index.astype(np.uint64, copy=False)
    if index.size and int(index.max()) >= meta.total_voxels:
        raise ctx.error(
            f"{what}: voxel index {int(index.max())} is at or beyond the image size {meta.total_voxels} "
            f"(number_of_voxels {meta.number_of_voxels})",
            "index",
        )
    rows = np.zeros(index.size, VOXEL_DTYPE)
    if index.size:
        if (np.diff(index.astype(np.int64)) > 0).all():
            rows["id"], rows["value"] = index, values
        else:
            order = np.argsort(index, kind="stable")
            sid = index[order]
            if (sid[1:] == sid[:-1]).any():
                dup = int(sid[1:][sid[1:] == sid[:-1]][0])
                raise ctx.error(f"{what}: voxel index {dup} appears more than once", "index")
            rows["id"], rows["value"] = sid, values[order]
    return rows


def _as_list(value, cls, ctx: _Ctx) -> list:
    if isinstance(value, cls):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ctx.error(f"expected a list of {cls.__name__} (one per projection), but got {type(value).__name__}")
    for v in value:
        if not isinstance(v, cls):
            raise ctx.error(f"expected a list of {cls.__name__}, but an item is {type(v).__name__}")
    return list(value)


def encode_sparse(value, counts: dict, dim: int, ctx: _Ctx) -> dict:
    projs = _as_list(value, SparseProjection, ctx)
    vox = [_voxels(p.index, p.values, p.meta, ctx, f"projection {p.meta.projection_id}") for p in projs]
    ns = [v.shape[0] for v in vox]
    firsts = counts["voxels"] + np.concatenate([[0], np.cumsum(ns)[:-1]]) if ns else []
    return {
        "extents": extents_row(counts["voxel_extents"], len(projs)),
        "voxel_extents": _idextents(firsts, ns, [p.meta.projection_id for p in projs]),
        "image_meta": meta_rows([p.meta for p in projs], dim, ctx),
        "voxels": np.concatenate(vox) if vox else np.zeros(0, VOXEL_DTYPE),
    }


def encode_cluster(value, counts: dict, dim: int, ctx: _Ctx) -> dict:
    projs = _as_list(value, ClusterProjection, ctx)
    vox, pe, ce = [], [], []
    n_vox = counts["voxels"]
    n_clu = counts["cluster_extents"]
    for p in projs:
        ids = np.asarray(p.ids) if p.ids is not None and len(p.ids) == len(p.clusters) else np.arange(len(p.clusters))
        pe.append((n_clu, len(p.clusters), p.meta.projection_id))
        for k, c in enumerate(p.clusters):
            v = _voxels(c.index, c.values, p.meta, ctx, f"projection {p.meta.projection_id} cluster {k}")
            ce.append((n_vox, v.shape[0], int(ids[k])))
            vox.append(v)
            n_vox += v.shape[0]
        n_clu += len(p.clusters)
    pe_a = np.array(pe, dtype=np.int64).reshape(-1, 3)
    ce_a = np.array(ce, dtype=np.int64).reshape(-1, 3)
    return {
        "extents": extents_row(counts["projection_extents"], len(projs)),
        "projection_extents": _idextents(pe_a[:, 0], pe_a[:, 1], pe_a[:, 2]),
        "image_meta": meta_rows([p.meta for p in projs], dim, ctx),
        "cluster_extents": _idextents(ce_a[:, 0], ce_a[:, 1], ce_a[:, 2]),
        "voxels": np.concatenate(vox) if vox else np.zeros(0, VOXEL_DTYPE),
    }


def encode_tensor(value, counts: dict, dim: int, ctx: _Ctx) -> dict:
    imgs = _as_list(value, DenseImage, ctx)
    data = []
    for im in imgs:
        arr = np.asarray(im.data, dtype=np.float32)
        if tuple(arr.shape) != tuple(int(n) for n in im.meta.number_of_voxels):
            raise ctx.error(
                f"image of projection {im.meta.projection_id} has shape {arr.shape} but its meta "
                f"number_of_voxels is {im.meta.number_of_voxels}",
                "data",
            )
        data.append(np.ascontiguousarray(arr).reshape(-1))
    ns = [d.size for d in data]
    firsts = counts["images"] + np.concatenate([[0], np.cumsum(ns)[:-1]]) if ns else []
    return {
        "extents": extents_row(counts["image_extents"], len(imgs)),
        "image_extents": _idextents(firsts, ns, [im.meta.projection_id for im in imgs]),
        "image_meta": meta_rows([im.meta for im in imgs], dim, ctx),
        "images": np.concatenate(data) if data else np.zeros(0, np.float32),
    }


def particle_rows(array: np.ndarray, ctx: _Ctx) -> np.ndarray:
    """Copy a structured particle array field by field into PARTICLE_DTYPE rows."""
    array = np.asarray(array)
    if array.dtype.names is None:
        raise ctx.error(f"particle array must be structured, but got dtype {array.dtype}", "array")
    unknown = set(array.dtype.names) - set(PARTICLE_DTYPE.names)
    if unknown:
        raise ctx.error(f"particle array has fields {sorted(unknown)} that larcv3 Particle does not have", "array")
    rows = np.zeros(array.shape[0], PARTICLE_DTYPE)
    for name in array.dtype.names:
        src = array[name]
        if src.dtype.names:
            for sub in src.dtype.names:
                rows[name][sub] = src[sub]
        elif name == "process":
            proc = np.array([bytes(p).split(b"\0", 1)[0][:63] for p in src], dtype="S64")
            rows[name] = proc
        else:
            rows[name] = src
    return rows


def encode_particle(value, counts: dict, dim, ctx: _Ctx) -> dict:
    if not isinstance(value, ParticleSet):
        raise ctx.error(f"expected a ParticleSet, but got {type(value).__name__}")
    rows = particle_rows(value.array, ctx)
    return {"extents": extents_row(counts["particles"], rows.shape[0]), "particles": rows}


def encode_bbox(value, counts: dict, dim: int, ctx: _Ctx) -> dict:
    sets = _as_list(value, BBoxSet, ctx)
    boxes, ns = [], []
    for i, s in enumerate(sets):
        c = np.asarray(s.centroids, dtype=np.float64).reshape(-1, dim) if np.size(s.centroids) else np.zeros((0, dim))
        h = np.asarray(s.half_sizes, dtype=np.float64).reshape(-1, dim) if np.size(s.half_sizes) else np.zeros((0, dim))
        if c.shape != h.shape:
            raise ctx.error(f"bbox set {i}: centroids {c.shape} and half_sizes {h.shape} differ", "half_sizes")
        rows = np.zeros(c.shape[0], BBOX_DTYPES[dim])
        rows["centroid"], rows["half_length"] = c, h
        if s.rotations is None:
            rows["rotation"] = np.eye(dim).reshape(-1)
        else:
            r = np.asarray(s.rotations, dtype=np.float64)
            if r.shape != (c.shape[0], dim, dim):
                raise ctx.error(f"bbox set {i}: rotations must be ({c.shape[0]}, {dim}, {dim}), but got {r.shape}", "rotations")
            rows["rotation"] = r.reshape(c.shape[0], dim * dim)
        boxes.append(rows)
        ns.append(rows.shape[0])
    firsts = counts["bboxes"] + np.concatenate([[0], np.cumsum(ns)[:-1]]) if ns else []
    return {
        "extents": extents_row(counts["bbox_extents"], len(sets)),
        "image_meta": meta_rows([s.meta for s in sets], dim, ctx),
        "bbox_extents": _idextents(firsts, ns, np.arange(len(sets))),
        "bboxes": np.concatenate(boxes) if boxes else np.zeros(0, BBOX_DTYPES[dim]),
    }


_ENCODERS = {
    "sparse": encode_sparse,
    "cluster": encode_cluster,
    "tensor": encode_tensor,
    "particle": encode_particle,
    "bbox": encode_bbox,
}


def encode(family: str, value, counts: dict, dim, *, path, key: str, entry: int) -> dict:
    """Return the new rows, per table, of one entry's product value."""
    return _ENCODERS[family](value, counts, dim, _Ctx(path, key, entry))
