"""The real MicroBooNE larcv1 file: reader and `tpcflow info` against direct uproot reads (issue 12)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import uproot
from conftest import data_path

from tpcflow.cli.main import main
from tpcflow.io.larcv_root import (
    image2d_version,
    iterate_image2d,
    read_chstatus,
    read_larcv2_event_ids,
    read_larcv2_images,
    read_larcv2_particles,
)
from tpcflow.io.summary import summarize_file

UB = "larcv1/out_larcv_test.root"
ROI = "larcv1/proton_roi.root"
PRE = "image2d_wire_branch/_image_v/_image_v."


@pytest.fixture(scope="module")
def raw():
    """The wire planes read straight with uproot: (3, 1008 * 3456) float32 and the metas."""
    with uproot.open(data_path(UB)) as f:
        t = f["image2d_wire_tree"]
        img = t[PRE + "_img"].array(library="np")[0]
        meta = {k: t[PRE + "_meta." + k].array(library="np")[0] for k in ("_origin.x", "_origin.y", "_width",
                                                                          "_height", "_row_count", "_col_count")}
    return [np.asarray(p, np.float32) for p in img], meta


def test_wire_planes_equal_direct_uproot_read(raw):
    flat, meta = raw
    (entry,) = list(iterate_image2d(data_path(UB), "wire"))
    assert entry.event_id == (6324, 94, 4707) and entry.entry == 0
    assert len(entry.images) == 3
    for p, (im, m) in enumerate(zip(entry.images, entry.metas, strict=True)):
        assert im.shape == (1008, 3456) and im.dtype == np.float32 and im.flags.c_contiguous
        assert m.projection_id == p and m.number_of_voxels == (1008, 3456)
        assert m.origin == (2400.0, 0.0) and m.image_sizes == (6048.0, 3456.0)
        assert int(meta["_row_count"][p]) == 1008 and float(meta["_origin.y"][p]) == 2400.0
        # column-major: index(row, col) = col * rows + row
        np.testing.assert_array_equal(im, flat[p].reshape(3456, 1008).T)
        assert np.count_nonzero(im) == np.count_nonzero(flat[p])
        assert im.sum(dtype=np.float64) == pytest.approx(flat[p].sum(dtype=np.float64), rel=1e-12)
    with uproot.open(data_path(UB)) as f:
        assert image2d_version(f["image2d_wire_tree"]) == 1
    np.testing.assert_array_equal(read_larcv2_event_ids(data_path(UB)), [[6324, 94, 4707]])


def test_bad_wires_are_all_zero_columns():
    """Orientation: every wire the chstatus tree marks bad is an all-zero column of its plane."""
    (entry,) = list(iterate_image2d(data_path(UB), "wire"))
    status = read_chstatus(data_path(UB), "wire")
    assert sorted(status) == [0, 1, 2] and [s.size for s in status.values()] == [2400, 2400, 3456]
    for p, im in enumerate(entry.images):
        bad = np.flatnonzero(status[p] != 4)
        assert bad.size > 50
        zero_cols = (im == 0).all(axis=0)
        assert zero_cols[bad].all(), f"plane {p}: a bad wire holds charge"
        # read the other way (row-major), the bad wires would not be empty columns
        wrong = im.T.reshape(-1).reshape(im.shape)
        assert not (wrong == 0).all(axis=0)[bad].all()


def test_empty_image_lists_and_tick_order():
    (empty,) = list(iterate_image2d(data_path(UB), "ssnetshower"))
    assert empty.images == [] and empty.metas == [] and empty.event_id == (6324, 94, 4707)
    images, metas = read_larcv2_images(data_path(UB), "ssnetshower")
    assert images.shape == (1, 0, 0, 0) and metas == [[]]
    fwd, _ = read_larcv2_images(data_path(UB), "wire")
    back, back_metas = read_larcv2_images(data_path(UB), "wire", tick_backward=True)
    np.testing.assert_array_equal(back, fwd[:, :, ::-1, :])
    assert back_metas[0][0].origin == (2400.0, 0.0)
    # two images of one plane (ubspurn): projection ids are the plane
    (spurn,) = list(iterate_image2d(data_path(UB), "ubspurn_plane1"))
    assert [m.projection_id for m in spurn.metas] == [1, 1]


def test_entry_ranges_stream_the_same_values():
    path = data_path("larcv2/example_larcv.root")
    whole, metas = read_larcv2_images(path)
    got = list(iterate_image2d(path, entry_start=1, entry_stop=4, step_size=2))
    assert [e.entry for e in got] == [1, 2, 3]
    for e in got:
        np.testing.assert_array_equal(np.stack(e.images), whole[e.entry])
        assert e.metas == metas[e.entry]
    part, _ = read_larcv2_images(path, entry_start=3, entry_stop=99)
    np.testing.assert_array_equal(part, whole[3:])


def test_info_json_agrees_with_reader_and_uproot(capsys, raw):
    flat, _ = raw
    assert main(["info", "--json", "--events", str(data_path(UB))]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["format"] == "larcv1" and d["entries"] == 1
    by = {f"{p['type']}/{p['producer']}": p for p in d["products"]}
    assert len(by) == 13
    wire = by["image2d/wire"]
    assert wire["projections"] == 3 and wire["number_of_voxels"] == [1008, 3456]
    assert wire["voxels"] == sum(int(np.count_nonzero(p)) for p in flat)
    (ev,) = d["events"]
    assert (ev["run"], ev["subrun"], ev["event"]) == (6324, 94, 4707)
    for p, plane in enumerate(ev["products"]["image2d/wire"]):
        assert plane["voxels"] == np.count_nonzero(flat[p])
        assert plane["sum"] == pytest.approx(float(flat[p].sum(dtype=np.float64)), rel=1e-12)
    assert ev["products"]["image2d/ssnetshower"] == []
    assert by["image2d/ssnetshower"]["projections"] == 0
    assert by["chstatus/wire"]["bad_wires"] == [int(np.count_nonzero(s != 4))
                                               for s in read_chstatus(data_path(UB)).values()]
    assert "skipped" in by["sparseimg/larflow"] and "skipped" in by["clustermask/mrcnn_masks"]
    assert main(["info", str(data_path(UB))]) == 0
    text = capsys.readouterr().out
    assert "image2d/wire" in text and "1008x3456" in text and "sparseimg/larflow: skipped" in text


def test_rois_read_and_unreadable_bounding_boxes_named():
    path = data_path(ROI)
    parts = read_larcv2_particles(path, "protonBDT", ptype="partroi")
    with uproot.open(path) as f:
        pdg = f["partroi_protonBDT_tree"]["partroi_protonBDT_branch/_part_v/_part_v._pdg"].array(library="np")
    assert len(parts) == 4180 == len(pdg)
    assert sum(len(p["pdg"]) for p in parts) == 4325
    np.testing.assert_array_equal(np.concatenate([p["pdg"] for p in parts]), np.concatenate(pdg))
    d = summarize_file(path)
    (roi,) = d["products"]
    assert d["format"] == "larcv1" and roi["particles"] == 4325
    assert any(u.startswith("_part_v._bb_v") for u in roi["unreadable"])


def test_every_unreadable_field_is_named_not_only_the_roi_boxes():
    """larcv2 particles carry memberwise-serialised boxes too (_bb2d_v); info names them and reads the rest."""
    d = summarize_file(data_path("larcv2/example_larcv.root"))
    (part,) = [p for p in d["products"] if p["type"] == "particle"]
    assert part["particles"] == 5
    assert any(u.startswith("_part_v._bb2d_v: ") for u in part["unreadable"])
