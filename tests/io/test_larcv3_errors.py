"""Bad input gives a clear tpcflow error naming file, product and entry; no h5py traceback."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from conftest import data_path

from tpcflow.errors import DataFormatError, EntryOutOfRangeError, ProductNotFoundError
from tpcflow.io import (
    ClusterProjection,
    Event,
    EventID,
    ImageMeta,
    Larcv3Writer,
    SparseProjection,
    open_larcv3,
    write_larcv3,
)

META = ImageMeta(0, (4, 5), (4.0, 5.0), (0.0, 0.0))


def _no_h5py_chain(err: BaseException) -> None:
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


def _event(i, index=(1, 2), key="sparse2d/wire"):
    return Event(EventID(0, 0, i), {key: [SparseProjection(META, np.array(index, np.uint64), np.ones(len(index), np.float32))]})


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(DataFormatError, match="not found") as info:
        open_larcv3(missing)
    assert str(missing) in str(info.value)


def test_not_hdf5(tmp_path):
    bad = tmp_path / "text.h5"
    bad.write_text("run,subrun,event\n1,2,3\n" * 100)
    with pytest.raises(DataFormatError, match="not an HDF5 file") as info:
        open_larcv3(bad)
    assert str(bad) in str(info.value)


def test_hdf5_but_not_larcv3(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(DataFormatError, match="not a larcv3 file") as info:
        open_larcv3(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("event_id", [np.int64(3), np.zeros((2, 3), np.int64), np.zeros(2, [("run", "u4")])],
                         ids=["scalar", "2-D", "missing fields"])
def test_a_malformed_event_id_table_names_it(tmp_path, event_id):
    """A copy of a real larcv3 file whose /Events/event_id is replaced by something else."""
    path = tmp_path / "bad.h5"
    shutil.copy(data_path("larcv3/cosmic_tagging_light.h5"), path)
    with h5py.File(path, "r+") as f:
        del f["Events/event_id"]
        f["Events/event_id"] = event_id
    with pytest.raises(DataFormatError, match="/Events/event_id must be a 1-D table with fields run, subrun, event") \
            as info:
        open_larcv3(path)
    assert str(path) in str(info.value)
    _no_h5py_chain(info.value)


@pytest.mark.parametrize("fraction", [0.3, 0.9])
def test_truncated_file(tmp_path, fraction):
    src = data_path("larcv3/ref_tensor2d.h5")
    cut = tmp_path / "cut.h5"
    data = src.read_bytes()
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(DataFormatError, match="truncated") as info:
        with open_larcv3(cut) as r:
            r.read_range(0, len(r))
    assert str(cut) in str(info.value)
    _no_h5py_chain(info.value)


def test_missing_product_lists_available():
    path = data_path("larcv3/cosmic_tagging_light.h5")
    with pytest.raises(ProductNotFoundError) as info:
        open_larcv3(path, products=["sparse2d/sbndwires"])
    msg = str(info.value)
    assert "sparse2d/sbndwires" in msg and "sparse2d/sbndwire" in msg and str(path) in msg
    with open_larcv3(path) as r:
        with pytest.raises(ProductNotFoundError) as info:
            r.read(3, products=["cluster2d/nothing"])
        assert "at entry 3" in "\n".join([str(info.value), *getattr(info.value, "__notes__", [])])
        assert isinstance(info.value, KeyError)


def test_entry_out_of_range():
    path = data_path("larcv3/cosmic_tagging_light.h5")
    with open_larcv3(path) as r:
        for bad in (5, -1, 100):
            with pytest.raises(EntryOutOfRangeError) as info:
                r.read(bad)
            assert f"entry {bad}" in str(info.value) and "5 entries" in str(info.value)
            assert str(path) in str(info.value)
        with pytest.raises(EntryOutOfRangeError):
            r.read_range(3, 7)
        with pytest.raises(EntryOutOfRangeError):
            r.read_sparse_block("sparse2d/sbndwire", 4, 6)
        with pytest.raises(EntryOutOfRangeError):
            r.locate(5)
        with pytest.raises(IndexError):  # the builtin it subclasses
            r.read(5)


def _corrupt_voxel_id(path, group, row, value):
    with h5py.File(path, "r+") as f:
        d = f[f"Data/{group}/voxels"]
        vox = d[row : row + 1]
        vox["id"] = value
        d[row : row + 1] = vox


def test_voxel_index_beyond_image_on_read(tmp_path):
    path = write_larcv3(tmp_path / "v.h5", [_event(0), _event(1, (0, 3, 19))])
    _corrupt_voxel_id(path, "sparse2d_wire_group", 4, 20)  # image has 4 x 5 = 20 voxels
    with open_larcv3(path) as r:
        r.read(0)
        with pytest.raises(DataFormatError, match="at or beyond the image size 20") as info:
            r.read(1)
        msg = str(info.value)
        assert str(path) in msg and "sparse2d_wire_group" in msg and "at entry 1" in msg
        with pytest.raises(DataFormatError, match="image size"):
            r.read_sparse_block("sparse2d/wire", 0, 2)


def test_cluster_voxel_index_beyond_image_on_read(tmp_path):
    clus = ClusterProjection(META, [SparseProjection(META, np.array([1, 2], np.uint64), np.ones(2, np.float32))])
    path = write_larcv3(tmp_path / "c.h5", [Event(EventID(0, 0, 0), {"cluster2d/seg": [clus]})])
    _corrupt_voxel_id(path, "cluster2d_seg_group", 1, 1000)
    with open_larcv3(path) as r, pytest.raises(DataFormatError, match="image size") as info:
        r.read(0)
    assert "at entry 0" in str(info.value)


def test_corrupt_extents_pointer(tmp_path):
    path = write_larcv3(tmp_path / "p.h5", [_event(0), _event(1)])
    with h5py.File(path, "r+") as f:
        d = f["Data/sparse2d_wire_group/voxel_extents"]
        rows = d[()]
        rows["N"][1] = 50
        d[...] = rows
    with pytest.raises(DataFormatError, match="points to rows") as info:
        with open_larcv3(path) as r:
            r.read(1)
    assert str(path) in str(info.value)


def test_writer_refuses_index_beyond_image_and_leaves_no_file(tmp_path):
    out = tmp_path / "w.h5"
    with pytest.raises(DataFormatError, match="at or beyond the image size 20") as info:
        with Larcv3Writer(out) as w:
            w.write(_event(0))
            w.write(_event(1, (3, 20)))
    msg = str(info.value)
    assert "sparse2d/wire" in msg and "at entry 1" in msg and str(out) in msg
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_duplicates_and_bad_shapes(tmp_path):
    with pytest.raises(DataFormatError, match="more than once"):
        write_larcv3(tmp_path / "d.h5", [_event(0, (3, 1, 3))])
    bad = Event(EventID(0, 0, 0), {"sparse3d/x": [SparseProjection(META, np.zeros(0, np.uint64), np.zeros(0, np.float32))]})
    with pytest.raises(DataFormatError, match="3-D"):
        write_larcv3(tmp_path / "m.h5", [bad])
    with pytest.raises(DataFormatError, match="product key"):
        write_larcv3(tmp_path / "k.h5", [Event(EventID(0, 0, 0), {"voxels/x": []})])
    with pytest.raises(ValueError, match="compression"):
        Larcv3Writer(tmp_path / "z.h5", compression=12)
    assert list(tmp_path.iterdir()) == []


def test_writer_is_atomic(tmp_path):
    out = tmp_path / "a.h5"
    with Larcv3Writer(out) as w:
        w.write(_event(0))
        w.flush()
        assert not out.exists()
        assert len(list(tmp_path.iterdir())) == 1  # the temporary file, same directory
    assert out.exists() and len(list(tmp_path.iterdir())) == 1
    with pytest.raises(RuntimeError):
        with Larcv3Writer(tmp_path / "b.h5") as w:
            w.write(_event(0))
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5"]
    # overwrite keeps the old file until the new one is complete
    shutil.copy(out, tmp_path / "old.h5")
    with Larcv3Writer(out) as w:
        w.write(_event(0, (5, 6, 7)))
        with open_larcv3(out) as r:
            assert len(r.read(0).products["sparse2d/wire"][0]) == 2
    with open_larcv3(out) as r:
        assert len(r.read(0).products["sparse2d/wire"][0]) == 3


def test_refused_event_leaves_writer_usable(tmp_path):
    out = tmp_path / "u.h5"
    with Larcv3Writer(out) as w:
        w.write(_event(0))
        with pytest.raises(DataFormatError, match="image size"):
            w.write(Event(EventID(0, 0, 1), {"sparse2d/other": [], "sparse2d/wire": [SparseProjection(META, np.array([99], np.uint64), np.ones(1, np.float32))]}))
        w.write(_event(1, (4,)))
    with open_larcv3(out) as r:
        assert len(r) == 2 and [p.key for p in r.products] == ["sparse2d/wire"]
        assert r.read(1).products["sparse2d/wire"][0].index.tolist() == [4]


def test_a_reversed_range_says_so(tmp_path):
    """Issue 16, item 10: read_range(3, 2) used to say 'entry 1 is out of range'."""
    from tpcflow.errors import ConfigError
    from tpcflow.io import open_larcv3
    from tpcflow.sim.sbnd import generate_file

    path = generate_file(tmp_path / "e.h5", 4, 1, downsample=4)
    with open_larcv3(path) as r:
        with pytest.raises(ConfigError, match=r"(?s)entry range \[3, 2\): stop must not be below start.*e.h5"):
            r.read_range(3, 2)
        assert len(r.read_range(2, 2)) == 0


def test_files_with_other_product_sets_are_read_for_the_products_they_share(tmp_path):
    """A real file beside a copy holding only its charge: readable together for the charge alone."""
    real = data_path("larcv3/cosmic_tagging_light.h5")
    charge_only = tmp_path / "charge_only.h5"
    with open_larcv3(real) as r:
        events = r.read_range(0, 2)
    write_larcv3(charge_only, [Event(ev.event_id, {"sparse2d/sbndwire": ev.products["sparse2d/sbndwire"]})
                               for ev in events])
    with open_larcv3([real, charge_only], products=["sparse2d/sbndwire"]) as both:
        assert len(both) == 7
        np.testing.assert_array_equal(both.read(5).products["sparse2d/sbndwire"][1].values,
                                      events[0].products["sparse2d/sbndwire"][1].values)
    with pytest.raises(ProductNotFoundError, match="sbnd_cosmicseg") as info:
        open_larcv3([real, charge_only], products=["sparse2d/sbndwire", "sparse2d/sbnd_cosmicseg"])
    assert str(charge_only) in str(info.value)
    with pytest.raises(DataFormatError, match=r"name them \(products=...\): \['sparse2d/sbndwire'\]"):
        open_larcv3([real, charge_only])
