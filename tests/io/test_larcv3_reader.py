"""Reader behaviour: vectorised ranges, multi-file datasets, pickling, the sparse block fast path."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import data_path

from tpcflow.errors import DataFormatError
from tpcflow.io import Larcv3Reader, open_larcv3, write_larcv3

COSMIC = "larcv3/cosmic_tagging_light.h5"
REF2D = "larcv3/ref_sparse2d.h5"


def assert_events_equal(a, b):
    assert a.event_id == b.event_id
    assert set(a.products) == set(b.products)
    for key, va in a.products.items():
        vb = b.products[key]
        if key.startswith("particle"):
            assert va.to_dicts() == vb.to_dicts()
            continue
        assert len(va) == len(vb)
        for pa, pb in zip(va, vb):
            assert pa.meta == pb.meta
            if key.startswith("sparse"):
                np.testing.assert_array_equal(pa.index, pb.index)
                np.testing.assert_array_equal(pa.values, pb.values)
            elif key.startswith("cluster"):
                np.testing.assert_array_equal(pa.ids, pb.ids)
                assert len(pa.clusters) == len(pb.clusters)
                for ca, cb in zip(pa.clusters, pb.clusters):
                    np.testing.assert_array_equal(ca.index, cb.index)
                    np.testing.assert_array_equal(ca.values, cb.values)
            else:
                np.testing.assert_array_equal(pa.data, pb.data)


@pytest.mark.parametrize("name", [COSMIC, REF2D, "larcv3/ref_sparse3d.h5", "larcv3/ref_tensor2d.h5"])
def test_read_range_equals_per_entry_read(name):
    with open_larcv3(data_path(name)) as r:
        n = len(r)
        whole = r.read_range(0, n)
        assert [ev.entry for ev in whole] == list(range(n))
        for i in range(n):
            assert_events_equal(whole[i], r.read(i))
        middle = r.read_range(1, n - 1)
        for ev in middle:
            assert_events_equal(ev, whole[ev.entry])
        assert r.read_range(2, 2) == []


def test_multi_file_concatenation(tmp_path):
    a = data_path(REF2D)
    b = write_larcv3(tmp_path / "copy.h5", open_larcv3(a).read_range(2, 5))
    with open_larcv3(a) as ra, open_larcv3([a, b]) as r:
        assert len(r) == 11 and r.files == [a, b]
        np.testing.assert_array_equal(r.event_ids, np.concatenate([ra.event_ids, ra.event_ids[2:5]]))
        assert r.locate(7) == (a, 7) and r.locate(8) == (b, 0) and r.locate(10) == (b, 2)
        across = r.read_range(6, 11)
        for ev in across:
            src = ev.entry if ev.entry < 8 else ev.entry - 8 + 2
            assert_events_equal(ev, ra.read(src))
        blk = r.read_sparse_block("sparse2d/sbndwire", 6, 11)
        parts = [ra.read_sparse_block("sparse2d/sbndwire", 6, 8), ra.read_sparse_block("sparse2d/sbndwire", 2, 5)]
        np.testing.assert_array_equal(blk.index, np.concatenate([p.index for p in parts]))
        np.testing.assert_array_equal(blk.values, np.concatenate([p.values for p in parts]))
        np.testing.assert_array_equal(blk.counts, np.concatenate([p.counts for p in parts]))
        assert blk.start == 6 and blk.event_ids.shape == (5, 3)


def test_files_with_different_products_are_refused():
    with pytest.raises(DataFormatError, match="different products") as info:
        open_larcv3([data_path(COSMIC), data_path(REF2D)])
    assert "cluster2d/sbndsegmerged" in str(info.value)


def test_product_selection_and_listing():
    path = data_path(COSMIC)
    with open_larcv3(path, products=["sparse2d_sbnd_cosmicseg", "particle/sbndneutrino"]) as r:
        assert [p.key for p in r.products] == ["sparse2d/sbnd_cosmicseg", "particle/sbndneutrino"]
        assert [(p.type, p.producer, p.projections) for p in r.products][0] == ("sparse2d", "sbnd_cosmicseg", 3)
        assert set(r.read(0).products) == {"sparse2d/sbnd_cosmicseg", "particle/sbndneutrino"}
        assert set(r.read(0, products=["sparse2d/sbnd_cosmicseg"]).products) == {"sparse2d/sbnd_cosmicseg"}


def test_pickle_reopens_by_path():
    with open_larcv3(data_path(COSMIC), products=["sparse2d/sbndwire"]) as r:
        first = r.read(2)
        clone = pickle.loads(pickle.dumps(r))
    assert isinstance(clone, Larcv3Reader) and len(clone) == 5
    assert_events_equal(clone.read(2), first)
    clone.close()
    assert_events_equal(clone.read(2), first)  # re-opens lazily after close


def test_sparse_block_matches_events_and_densifies():
    with open_larcv3(data_path(REF2D)) as r:
        blk = r.read_sparse_block("sparse2d/sbndwire", 1, 4)
        events = r.read_range(1, 4, products=["sparse2d/sbndwire"])
        with pytest.raises(DataFormatError, match="sparse2d/sparse3d"):
            r.read_sparse_block("cluster2d/sbndseg", 0, 1)
    assert blk.index.dtype == np.uint64 and blk.values.dtype == np.float32
    assert blk.counts.dtype == np.int64 and blk.counts.shape == (3, 3)
    assert blk.metas == [p.meta for p in events[0].products["sparse2d/sbndwire"]]
    off = blk.offsets
    dense = blk.to_dense()
    assert dense.shape == (3, 3, 2048, 1280) and dense.dtype == np.float32
    buf = np.full_like(dense, 7.0)
    assert blk.to_dense(out=buf) is buf
    for e, ev in enumerate(events):
        for p, proj in enumerate(ev.products["sparse2d/sbndwire"]):
            s, c = off[e, p], blk.counts[e, p]
            assert c == len(proj)
            np.testing.assert_array_equal(blk.index[s : s + c], proj.index)
            np.testing.assert_array_equal(blk.values[s : s + c], proj.values)
            np.testing.assert_array_equal(dense[e, p], proj.to_dense())
            np.testing.assert_array_equal(buf[e, p], proj.to_dense())


@pytest.mark.parametrize("name", [COSMIC, "larcv3/ref_sparse3d.h5", "larcv3/ref_tensor2d.h5"])
def test_direct_chunk_reads_equal_h5py_reads(name, monkeypatch):
    monkeypatch.setenv("TPCFLOW_IO_THREADS", "2")
    with open_larcv3(data_path(name), direct=True) as fast, open_larcv3(data_path(name), direct=False) as slow:
        for a, b in zip(fast.read_range(0, len(fast)), slow.read_range(0, len(slow))):
            assert_events_equal(a, b)
        assert any(idx is not None for t in fast._files[0]._tables.values() for idx in t._chunk_index.values())
        assert all(not t._chunk_index for t in slow._files[0]._tables.values())


def test_file_truncated_after_open_is_reported(tmp_path):
    src = data_path(REF2D)
    path = tmp_path / "cut.h5"
    path.write_bytes(src.read_bytes())
    with open_larcv3(path) as r:
        r.read(0)
        with open(path, "r+b") as fh:
            fh.truncate(path.stat().st_size // 2)
        with pytest.raises(DataFormatError, match="truncated") as info:
            r.read_range(0, len(r))
    assert str(path) in str(info.value)


def test_direct_reads_of_scattered_chunks():
    """Chunks far apart in the file (larcv rewrites growing chunks at the end) are read one by one."""
    import os

    import h5py

    from tpcflow.io.larcv3._chunks import ChunkIndex

    path = data_path(COSMIC)
    with h5py.File(path, "r") as f:
        dset = f["Data/sparse2d_sbndwire_group/voxels"]
        idx = ChunkIndex.build(dset, path)
        assert idx is not None
        ref = dset[()]
    fd = os.open(path, os.O_RDONLY)
    try:
        k = [len(idx.offsets) - 1, 0]  # last chunk first: a span of the whole file
        blobs = idx._pread(fd, idx.offsets[k], idx.sizes[k], 0, 1, None)
        got = [np.frombuffer(idx._inflate(b), ref.dtype) for b in blobs]
        np.testing.assert_array_equal(got[1]["id"], ref["id"][: idx.chunk])
        tail = ref[(len(idx.offsets) - 1) * idx.chunk :]
        np.testing.assert_array_equal(got[0]["id"][: len(tail)], tail["id"])
        mid = idx.read(fd, 12_345, 67_890)
        np.testing.assert_array_equal(mid["id"], ref["id"][12_345:67_890])
        np.testing.assert_array_equal(mid["value"], ref["value"][12_345:67_890])
    finally:
        os.close(fd)


def test_concurrent_reads_from_threads():
    from concurrent.futures import ThreadPoolExecutor

    with open_larcv3(data_path(COSMIC), products=["sparse2d/sbndwire", "cluster2d/sbndsegmerged"]) as r:
        with ThreadPoolExecutor(4) as ex:
            blocks = list(ex.map(lambda e: r.read_sparse_block("sparse2d/sbndwire", e, e + 1), [0, 1, 2, 3, 4] * 2))
            events = list(ex.map(r.read, range(5)))
        whole = r.read_sparse_block("sparse2d/sbndwire", 0, 5)
    np.testing.assert_array_equal(np.concatenate([b.index for b in blocks[:5]]), whole.index)
    np.testing.assert_array_equal(np.concatenate([b.values for b in blocks[5:]]), whole.values)
    assert [ev.entry for ev in events] == list(range(5))


def test_sparse_block_with_varying_projections_and_empty_entries(tmp_path):
    from tpcflow.io import Event, EventID, ImageMeta, SparseProjection

    metas = [ImageMeta(p, (3, 4), (3.0, 4.0), (0.0, 0.0)) for p in range(3)]

    def proj(p, ids):
        return SparseProjection(metas[p], np.array(ids, np.uint64), np.arange(1, len(ids) + 1, dtype=np.float32))

    events = [
        Event(EventID(0, 0, 0), {"sparse2d/w": [proj(0, [1, 2]), proj(1, [])]}),
        Event(EventID(0, 0, 1), {}),
        Event(EventID(0, 0, 2), {"sparse2d/w": [proj(0, [0]), proj(1, [5]), proj(2, [11, 3])]}),
    ]
    path = write_larcv3(tmp_path / "v.h5", events)
    with open_larcv3(path) as r:
        assert [p.projections for p in r.products] == [3]
        blk = r.read_sparse_block("sparse2d/w", 0, 3)
        assert blk.counts.tolist() == [[2, 0, 0], [0, 0, 0], [1, 1, 2]]
        assert blk.index.tolist() == [1, 2, 0, 5, 3, 11]
        assert blk.values.tolist() == [1, 2, 1, 1, 2, 1]
        assert blk.metas == metas
        assert r.read(1).products["sparse2d/w"] == []
        assert len(r.read(0).products["sparse2d/w"][1]) == 0
        dense = blk.to_dense()
        assert dense.shape == (3, 3, 3, 4) and dense[2, 2, 2, 3] == 1 and dense[2, 2, 0, 3] == 2
        empty = r.read_sparse_block("sparse2d/w", 1, 2)
        assert empty.counts.shape == (1, 0) and empty.index.size == 0


def test_sparse_block_refuses_projections_in_different_order(tmp_path):
    from tpcflow.io import Event, EventID, ImageMeta, SparseProjection

    m = [ImageMeta(p, (3, 4), (3.0, 4.0), (0.0, 0.0)) for p in range(2)]
    one = np.array([1], np.uint64), np.ones(1, np.float32)
    events = [
        Event(EventID(0, 0, 0), {"sparse2d/w": [SparseProjection(m[0], *one), SparseProjection(m[1], *one)]}),
        Event(EventID(0, 0, 1), {"sparse2d/w": [SparseProjection(m[1], *one)]}),
    ]
    path = write_larcv3(tmp_path / "o.h5", events)
    with open_larcv3(path) as r:
        with pytest.raises(DataFormatError, match="projection_id 1") as info:
            r.read_sparse_block("sparse2d/w", 0, 2)
        assert "at entry 1" in str(info.value)
        assert r.read_sparse_block("sparse2d/w", 1, 2).metas == [m[1]]
        assert [p.meta for p in r.read(1).products["sparse2d/w"]] == [m[1]]
