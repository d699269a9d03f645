"""Our writer reproduces the larcv 3.5.1 file layout dataset by dataset."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import data_path

from tpcflow.io import Event, EventID, ImageMeta, ParticleSet, SparseProjection, open_larcv3, write_larcv3
from tpcflow.io.larcv3.schema import PARTICLE_DTYPE


def _datasets(f: h5py.File) -> dict[str, h5py.Dataset]:
    out = {}
    f.visititems(lambda name, obj: out.__setitem__(name, obj) if isinstance(obj, h5py.Dataset) else None)
    return out


@pytest.mark.parametrize("name", ["ref_sparse2d", "ref_sparse3d", "ref_tensor2d"])
def test_writer_layout_matches_larcv(tmp_path, name):
    src = data_path(f"larcv3/{name}.h5")
    with open_larcv3(src) as r:
        events = r.read_range(0, len(r))
    out = write_larcv3(tmp_path / "ours.h5", events, compression=1)
    with h5py.File(src, "r") as a, h5py.File(out, "r") as b:
        da, db = _datasets(a), _datasets(b)
        assert sorted(da) == sorted(db)
        assert sorted(a["Data"]) == sorted(b["Data"])
        for path, x in da.items():
            y = db[path]
            assert y.dtype == x.dtype, path
            assert y.dtype.itemsize == x.dtype.itemsize, path
            assert [y.dtype.fields[n][1] for n in y.dtype.names or ()] == [x.dtype.fields[n][1] for n in x.dtype.names or ()]
            assert y.id.get_type() == x.id.get_type(), f"HDF5 type differs for {path}"
            assert (y.shape, y.maxshape, y.chunks) == (x.shape, x.maxshape, x.chunks), path
            assert (y.compression, y.compression_opts, y.shuffle, y.fletcher32) == (
                x.compression, x.compression_opts, x.shuffle, x.fletcher32), path  # fmt: skip
            xa, ya = x[()], y[()]
            for field in x.dtype.names or (None,):
                np.testing.assert_array_equal(ya[field] if field else ya, xa[field] if field else xa, err_msg=path)


def _tiny_events(n=3):
    meta = ImageMeta(0, (4, 5), (4.0, 5.0), (0.0, 0.0))
    parts = np.zeros(2, PARTICLE_DTYPE)
    parts["pdg"] = [13, 11]
    parts["process"] = [b"primary", b"muIoni"]
    return [
        Event(
            EventID(1, 2, i),
            {
                "sparse2d/x_y": [SparseProjection(meta, np.array([7, 3], np.uint64), np.array([1.0, 2.0], np.float32))],
                "particle/mc": ParticleSet(parts),
            },
        )
        for i in range(n)
    ]


def test_compression_zero_has_no_filters(tmp_path):
    out = write_larcv3(tmp_path / "c0.h5", _tiny_events(), compression=0)
    with h5py.File(out, "r") as f:
        for path, d in _datasets(f).items():
            if path == "Events/event_id":
                assert (d.compression, d.compression_opts) == ("gzip", 0)
            else:
                assert d.compression is None and d.id.get_create_plist().get_nfilters() == 0, path
    out = write_larcv3(tmp_path / "c6.h5", _tiny_events(), compression=6)
    with h5py.File(out, "r") as f:
        assert {(d.compression, d.compression_opts) for d in _datasets(f).values()} == {("gzip", 6)}


def test_voxels_sorted_and_empty_projection_stored(tmp_path):
    meta = ImageMeta(1, (4, 5), (4.0, 5.0), (0.0, 0.0))
    empty = SparseProjection(ImageMeta(0, (4, 5), (4.0, 5.0), (0.0, 0.0)), np.zeros(0, np.uint64), np.zeros(0, np.float32))
    proj = SparseProjection(meta, np.array([19, 2, 11], np.uint64), np.array([3.0, 1.0, 2.0], np.float32))
    out = write_larcv3(tmp_path / "s.h5", [Event(EventID(0, 0, 0), {"sparse2d/w": [empty, proj]})])
    with h5py.File(out, "r") as f:
        g = f["Data/sparse2d_w_group"]
        assert g["voxels"]["id"].tolist() == [2, 11, 19]
        assert g["voxels"]["value"].tolist() == [1.0, 2.0, 3.0]
        assert g["voxel_extents"][()].tolist() == [(0, 0, 0), (0, 3, 1)]
        assert g["image_meta"].shape == (2,)
        assert g["extents"][()].tolist() == [(0, 2)]


def test_zero_particle_entry_reads_none_not_previous(tmp_path):
    events = _tiny_events(3)
    events[1].products["particle/mc"] = ParticleSet(np.zeros(0, PARTICLE_DTYPE))
    out = write_larcv3(tmp_path / "p.h5", events)
    with h5py.File(out, "r") as f:
        assert f["Data/particle_mc_group/extents"]["N"].tolist() == [2, 0, 2]
    with open_larcv3(out) as r:
        assert [len(r.read(i).products["particle/mc"]) for i in range(3)] == [2, 0, 2]
        assert [p["process"] for p in r.read(2).products["particle/mc"].to_dicts()] == ["primary", "muIoni"]


def test_same_events_give_same_bytes(tmp_path):
    a = write_larcv3(tmp_path / "a.h5", _tiny_events())
    b = write_larcv3(tmp_path / "b.h5", _tiny_events())
    assert a.read_bytes() == b.read_bytes()


def test_process_cut_at_first_nul(tmp_path):
    out = write_larcv3(tmp_path / "p.h5", _tiny_events(1))
    with h5py.File(out, "r+") as f:  # emulate larcv leaving bytes after the NUL
        d = f["Data/particle_mc_group/particles"]
        rows = d[()]
        rows["process"][0] = b"primary\0garbage"
        # write the raw bytes with the file's own type (no string conversion)
        d.id.write(h5py.h5s.create_simple(rows.shape), h5py.h5s.ALL, rows, mtype=d.id.get_type())
        raw = np.empty(rows.shape, d.dtype)
        d.id.read(h5py.h5s.ALL, h5py.h5s.ALL, raw, mtype=d.id.get_type())
        assert raw["process"][0].startswith(b"primary\0g")
    with open_larcv3(out) as r:
        ps = r.read(0).products["particle/mc"]
    assert ps.to_dicts()[0]["process"] == "primary"
    assert ps.array["process"][0] == b"primary"
