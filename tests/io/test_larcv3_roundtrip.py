"""Write -> read round trips of every larcv3 product type (hypothesis)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tpcflow.io import (
    BBoxSet,
    ClusterProjection,
    DenseImage,
    Event,
    EventID,
    ImageMeta,
    ParticleSet,
    SparseProjection,
    open_larcv3,
    write_larcv3,
)
from tpcflow.io.larcv3.schema import PARTICLE_DTYPE

SETTINGS = settings(max_examples=30, deadline=None)
finite = st.floats(-1e6, 1e6, allow_nan=False, width=64)
f32 = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@st.composite
def metas(draw, dim, max_side=12, projection_id=None):
    nv = tuple(draw(st.lists(st.integers(1, max_side), min_size=dim, max_size=dim)))
    sizes = tuple(draw(st.lists(st.floats(0.1, 1e4, allow_nan=False), min_size=dim, max_size=dim)))
    origin = tuple(draw(st.lists(finite, min_size=dim, max_size=dim)))
    pid = draw(st.integers(0, 5)) if projection_id is None else projection_id
    return ImageMeta(pid, nv, sizes, origin, valid=draw(st.booleans()))


@st.composite
def voxel_sets(draw, meta):
    n = draw(st.integers(0, min(meta.total_voxels, 40)))
    ids = draw(st.lists(st.integers(0, meta.total_voxels - 1), min_size=n, max_size=n, unique=True))
    vals = draw(st.lists(f32, min_size=n, max_size=n))
    return SparseProjection(meta, np.array(ids, dtype=np.uint64), np.array(vals, dtype=np.float32))


@st.composite
def sparse_products(draw, dim):
    n_proj = draw(st.integers(0, 3))
    return [draw(voxel_sets(draw(metas(dim, projection_id=p)))) for p in range(n_proj)]


@st.composite
def cluster_products(draw, dim):
    out = []
    for p in range(draw(st.integers(0, 3))):
        meta = draw(metas(dim, projection_id=p))
        k = draw(st.integers(0, 4))
        clusters = [draw(voxel_sets(meta)) for _ in range(k)]
        ids = np.array(draw(st.lists(st.integers(0, 2**32 - 1), min_size=k, max_size=k)), dtype=np.uint32)
        out.append(ClusterProjection(meta, clusters, ids))
    return out


@st.composite
def tensor_products(draw, dim):
    out = []
    for p in range(draw(st.integers(0, 3))):
        meta = draw(metas(dim, max_side=6 if dim < 4 else 3, projection_id=p))
        data = np.array(draw(st.lists(f32, min_size=meta.total_voxels, max_size=meta.total_voxels)), np.float32)
        out.append(DenseImage(meta, data.reshape(meta.number_of_voxels)))
    return out


@st.composite
def particle_sets(draw):
    k = draw(st.integers(0, 4))
    arr = np.zeros(k, PARTICLE_DTYPE)
    for name in PARTICLE_DTYPE.names:
        sub = PARTICLE_DTYPE[name]
        if sub.names:
            for c in sub.names:
                arr[name][c] = draw(st.lists(finite, min_size=k, max_size=k))
        elif sub.kind == "S":
            text = st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=63)
            arr[name] = [s.encode("ascii") for s in draw(st.lists(text, min_size=k, max_size=k))]
        elif sub.kind == "f":
            arr[name] = draw(st.lists(finite, min_size=k, max_size=k))
        else:
            info = np.iinfo(sub)
            arr[name] = draw(st.lists(st.integers(int(info.min), int(info.max)), min_size=k, max_size=k))
    return ParticleSet(arr)


@st.composite
def bbox_products(draw, dim):
    out = []
    for _ in range(draw(st.integers(0, 3))):
        meta = draw(st.none() | metas(dim))
        k = draw(st.integers(0, 4))
        c = np.array(draw(st.lists(finite, min_size=k * dim, max_size=k * dim)), np.float64).reshape(k, dim)
        h = np.array(draw(st.lists(finite, min_size=k * dim, max_size=k * dim)), np.float64).reshape(k, dim)
        rot = None
        if draw(st.booleans()):
            rot = np.array(draw(st.lists(finite, min_size=k * dim * dim, max_size=k * dim * dim))).reshape(k, dim, dim)
        out.append(BBoxSet(meta, c, h, rot))
    return out


def _sorted(p: SparseProjection):
    order = np.argsort(p.index, kind="stable")
    return p.index[order], p.values[order]


def assert_sparse_equal(got: SparseProjection, want: SparseProjection):
    assert got.meta == want.meta
    idx, val = _sorted(want)
    np.testing.assert_array_equal(got.index, idx)
    np.testing.assert_array_equal(got.values, val)
    assert got.index.dtype == np.uint64 and got.values.dtype == np.float32


def assert_product_equal(ptype: str, got, want):
    if ptype == "particle":
        assert got.to_dicts() == want.to_dicts()
        return
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if ptype.startswith("sparse"):
            assert_sparse_equal(g, w)
        elif ptype.startswith("cluster"):
            assert g.meta == w.meta and len(g.clusters) == len(w.clusters)
            np.testing.assert_array_equal(g.ids, w.ids)
            for gc, wc in zip(g.clusters, w.clusters):
                assert_sparse_equal(gc, wc)
        elif ptype.startswith("bbox"):
            assert g.meta == w.meta
            np.testing.assert_array_equal(g.centroids, w.centroids)
            np.testing.assert_array_equal(g.half_sizes, w.half_sizes)
            dim = g.centroids.shape[1]
            want_rot = w.rotations if w.rotations is not None else np.broadcast_to(np.eye(dim), (len(w.centroids), dim, dim))
            np.testing.assert_array_equal(g.rotations, want_rot)
        else:
            assert g.meta == w.meta
            np.testing.assert_array_equal(g.data, w.data)
            assert g.data.dtype == np.float32


def roundtrip(events: list[Event], compression: int = 1) -> list[Event]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rt.h5"
        write_larcv3(path, events, compression=compression)
        with open_larcv3(path) as r:
            assert len(r) == len(events)
            back = r.read_range(0, len(r))
            assert [r.read(i).event_id for i in range(len(r))] == [e.event_id for e in events]
    return back


def _check(ptype, producer, values, compression=1):
    key = f"{ptype}/{producer}"
    events = [Event(EventID(i, 2 * i, 3 * i), {key: v}) for i, v in enumerate(values)]
    back = roundtrip(events, compression)
    for ev, b in zip(events, back):
        assert b.event_id == ev.event_id
        assert_product_equal(ptype, b.products[key], ev.products[key])


event_ids = st.integers(-(2**63), 2**63 - 1)


@SETTINGS
@given(st.lists(sparse_products(2), min_size=1, max_size=3), st.sampled_from([0, 1, 4]))
def test_sparse2d_roundtrip(values, compression):
    _check("sparse2d", "sbnd_wire", values, compression)


@SETTINGS
@given(st.lists(sparse_products(3), min_size=1, max_size=3))
def test_sparse3d_roundtrip(values):
    _check("sparse3d", "data", values)


@SETTINGS
@given(st.lists(cluster_products(2), min_size=1, max_size=3))
def test_cluster2d_roundtrip(values):
    _check("cluster2d", "seg", values)


@SETTINGS
@given(st.lists(cluster_products(3), min_size=1, max_size=3))
def test_cluster3d_roundtrip(values):
    _check("cluster3d", "group", values)


@SETTINGS
@given(st.lists(particle_sets(), min_size=1, max_size=3))
def test_particle_roundtrip(values):
    _check("particle", "mc_truth", values)


@SETTINGS
@given(st.sampled_from([("image2d", 2), ("tensor1d", 1), ("tensor3d", 3), ("tensor4d", 4)]), st.data())
def test_tensor_roundtrip(kind, data):
    ptype, dim = kind
    values = data.draw(st.lists(tensor_products(dim), min_size=1, max_size=3))
    _check(ptype, "wire", values)


@SETTINGS
@given(st.sampled_from([("bbox2d", 2), ("bbox3d", 3)]), st.data())
def test_bbox_roundtrip(kind, data):
    ptype, dim = kind
    values = data.draw(st.lists(bbox_products(dim), min_size=1, max_size=3))
    _check(ptype, "boxes", values)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(event_ids, event_ids, event_ids), min_size=1, max_size=4), st.data())
def test_mixed_products_and_missing_entries(ids, data):
    """Events with different product subsets: a missing product reads back empty."""
    events = []
    for run, sub, evt in ids:
        prods = {}
        if data.draw(st.booleans()):
            prods["sparse2d/a_b"] = data.draw(sparse_products(2))
        if data.draw(st.booleans()):
            prods["particle/p"] = data.draw(particle_sets())
        events.append(Event(EventID(run, sub, evt), prods))
    back = roundtrip(events)
    present = {k for ev in events for k in ev.products}
    for ev, b in zip(events, back):
        assert b.event_id == ev.event_id
        assert set(b.products) == present
        for key in present:
            ptype = key.split("/")[0]
            if key in ev.products:
                assert_product_equal(ptype, b.products[key], ev.products[key])
            else:
                assert len(b.products[key]) == 0
