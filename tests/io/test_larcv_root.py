"""larcv2 ROOT image2d reader against the real larcv2 files and raw uproot arrays."""

from __future__ import annotations

import numpy as np
import pytest
import uproot
from conftest import data_path

from tpcflow.errors import DataFormatError, ProductNotFoundError
from tpcflow.io.larcv_root import (
    list_larcv2_trees,
    read_larcv2_event_ids,
    read_larcv2_images,
    read_larcv2_particles,
)

EXAMPLE = "larcv2/example_larcv.root"
PRE = "image2d_wire_branch/_image_v/_image_v."


@pytest.fixture(scope="module")
def example():
    return read_larcv2_images(data_path(EXAMPLE))


def test_example_shape_and_meta(example):
    images, metas = example
    assert images.shape == (5, 3, 512, 512) and images.dtype == np.float32
    assert len(metas) == 5 and all(len(m) == 3 for m in metas)
    with uproot.open(data_path(EXAMPLE)) as f:
        t = f["image2d_wire_tree"]
        p1x = t[PRE + "_meta._p1.x"].array(library="np")
        p2y = t[PRE + "_meta._p2.y"].array(library="np")
    for e in range(5):
        for p in range(3):
            m = metas[e][p]
            assert m.projection_id == p and m.number_of_voxels == (512, 512)
            assert m.origin[1] == p1x[e][p] and m.origin[0] + m.image_sizes[0] == p2y[e][p]


def test_values_equal_raw_uproot_vectors_column_major(example):
    images, _ = example
    with uproot.open(data_path(EXAMPLE)) as f:
        raw = f["image2d_wire_tree"][PRE + "_img"].array(library="np", entry_start=2, entry_stop=3)[0]
    for p in range(3):
        flat = np.asarray(raw[p], dtype=np.float32)
        # larcv2 Image2D index(row, col) = col * rows + row
        rows = cols = 512
        r, c = 17, 301
        assert images[2, p, r, c] == flat[c * rows + r]
        np.testing.assert_array_equal(images[2, p], flat.reshape(cols, rows).T)


def test_dead_wires_are_whole_columns(example):
    """The column-major reading puts the channels marked bad in chstatus on all-zero columns."""
    images, metas = example
    with uproot.open(data_path(EXAMPLE)) as f:
        status = f["chstatus_wire_tree"]["chstatus_wire_branch/_status_m"].array(library="np", entry_stop=1)[0]
    st = np.asarray(status[0].member("_status_v"))
    m = metas[0][0]
    width = m.image_sizes[1] / m.number_of_voxels[1]
    zero_cols = np.flatnonzero((images[0, 0] == 0).all(axis=0))
    dead = np.flatnonzero(st != 4)
    wires = np.round(m.origin[1] + zero_cols * width).astype(int)
    assert zero_cols.size > 10
    assert np.isin(wires, dead).mean() > 0.9
    assert not (images[0, 0] == 0).all(axis=1).any(), "no time row is empty"


def test_event_ids_and_other_files():
    np.testing.assert_array_equal(
        read_larcv2_event_ids(data_path(EXAMPLE)), [[1, 0, e] for e in range(1, 6)]
    )
    for name, pdg in (("electron.root", 11), ("proton.root", 2212)):
        path = data_path(f"larcv2/{name}")
        images, metas = read_larcv2_images(path, producer="data")
        assert images.shape == (10, 3, 256, 256)
        parts = read_larcv2_particles(path, "mctruth")
        assert len(parts) == 10 and all(set(p["pdg"].tolist()) == {pdg} for p in parts)
        assert list_larcv2_trees(path) == {"image2d_data_tree": 10, "particle_mctruth_tree": 10}


def test_missing_tree_lists_available_trees():
    with pytest.raises(ProductNotFoundError) as err:
        read_larcv2_images(data_path(EXAMPLE), producer="data")
    msg = str(err.value)
    assert "image2d_data_tree" in msg and "image2d_wire_tree" in msg and "example_larcv.root" in msg


def test_bad_files(tmp_path):
    with pytest.raises(DataFormatError, match="file not found"):
        read_larcv2_images(tmp_path / "missing.root")
    text = tmp_path / "notroot.root"
    text.write_text("hello, this is not ROOT\n")
    with pytest.raises(DataFormatError, match="cannot open as ROOT") as err:
        read_larcv2_images(text)
    assert str(text) in str(err.value)
