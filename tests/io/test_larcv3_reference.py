"""The larcv3 reader against real files: cosmic_tagging_light.h5 and every ref_*.h5 vs its *.expected.json.

The expected JSON files were computed in numpy from the inputs given to larcv 3.5.1
(MANIFEST.md); every key of them is checked: a key the test does not know fails it.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from conftest import data_path

from tpcflow.io import open_larcv3

REL = 1e-9
# descriptive keys, not data
_TEXT_KEYS = {"type", "producer", "label_values", "axis_order", "dtype"}


def sha(a: np.ndarray, dt: str) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype=dt).tobytes()).hexdigest()


class Checked(dict):
    """A dict that remembers which keys were read; ``unread()`` lists the others."""

    def __init__(self, d):
        super().__init__(d)
        self.seen = set()

    def __getitem__(self, k):
        self.seen.add(k)
        return super().__getitem__(k)

    def unread(self):
        return set(self) - self.seen - _TEXT_KEYS


def check_meta(exp, meta):
    exp = Checked(exp)
    assert int(exp["valid"]) == int(meta.valid)
    assert exp["projection_id"] == meta.projection_id
    assert tuple(exp["number_of_voxels"]) == meta.number_of_voxels
    assert tuple(exp["image_sizes"]) == meta.image_sizes
    assert tuple(exp["origin"]) == meta.origin
    assert exp["voxel_size"] == pytest.approx(meta.voxel_size, rel=1e-12)
    assert not exp.unread()


def check_voxel_list(exp_list, proj, coords):
    for v in exp_list:
        v = Checked(v)
        pos = int(np.searchsorted(proj.index, np.uint64(v["index"])))
        assert proj.index[pos] == v["index"]
        assert float(proj.values[pos]) == v["value"]
        assert list(coords[pos]) == v["coords"]
        assert not v.unread()


def check_sparse(exp, proj, position):
    exp = Checked(exp)
    assert exp["position"] == position
    assert exp["projection_id"] == proj.meta.projection_id
    check_meta(exp["meta"], proj.meta)
    idx, val = proj.index, proj.values
    assert idx.dtype == np.uint64 and val.dtype == np.float32
    v64 = val.astype(np.float64)
    coords = proj.coords
    assert len(proj) == exp["n_voxels"]
    assert math.fsum(v64) == pytest.approx(exp["sum_values"], rel=REL)
    assert math.fsum(np.abs(v64)) == pytest.approx(exp["sum_abs_values"], rel=REL)
    assert float(val.min()) == exp["min_value"] and float(val.max()) == exp["max_value"]
    assert int(np.count_nonzero(val)) == exp["count_nonzero_values"]
    assert int(idx.astype(object).sum()) == exp["sum_index"]
    assert math.fsum(idx.astype(np.float64) * v64) == pytest.approx(exp["sum_index_times_value"], rel=REL)
    for ax in range(coords.shape[1]):
        assert math.fsum(coords[:, ax] * v64) == pytest.approx(exp["sum_value_times_coord"][ax], rel=REL)
        assert int(coords[:, ax].sum()) == exp["sum_coord"][ax]
    assert sha(idx, "<u8") == exp["sha256_index_u8le"]
    assert sha(val, "<f4") == exp["sha256_value_f4le"]
    check_voxel_list(exp["first_voxels"], proj, coords)
    check_voxel_list(exp["last_voxels"], proj, coords)
    assert [int(i) for i in idx[: len(exp["first_voxels"])]] == [v["index"] for v in exp["first_voxels"]]
    assert [int(i) for i in idx[len(idx) - len(exp["last_voxels"]) :]] == [v["index"] for v in exp["last_voxels"]]
    dense = proj.to_dense()
    for s in exp["samples"]:
        s = Checked(s)
        assert float(dense[tuple(s["coords"])]) == s["value"]
        assert int(proj.meta.index(np.array([s["coords"]]))[0]) == s["index"]
        assert not s.unread()
    d = Checked(exp["dense"])
    assert list(dense.shape) == d["shape"] and str(dense.dtype) == d["dtype"]
    assert sha(dense, "<f4") == d["sha256_c_order_f4le"]
    assert int(np.count_nonzero(dense)) == d["count_nonzero"]
    nonzero = dense[dense != 0].astype(np.float64)  # zeros add nothing to the exact sum
    assert math.fsum(nonzero) == pytest.approx(d["sum"], rel=REL)
    assert not d.unread()
    assert not exp.unread()


def check_cluster(exp, cproj, position):
    exp = Checked(exp)
    assert exp["position"] == position
    assert exp["projection_id"] == cproj.meta.projection_id
    check_meta(exp["meta"], cproj.meta)
    cl = cproj.clusters
    assert len(cl) == exp["n_clusters"]
    assert [int(i) for i in cproj.ids] == exp["cluster_ids"]
    assert [len(c) for c in cl] == exp["cluster_n_voxels"]
    got_sums = [math.fsum(c.values.astype(np.float64)) for c in cl]
    assert got_sums == pytest.approx(exp["cluster_sum_values"], rel=REL)
    assert [int(c.index.astype(object).sum()) for c in cl] == exp["cluster_sum_index"]
    assert [sha(c.index, "<u8") for c in cl] == exp["cluster_sha256_index_u8le"]
    assert [sha(c.values, "<f4") for c in cl] == exp["cluster_sha256_value_f4le"]
    assert sum(len(c) for c in cl) == exp["n_voxels_total"]
    assert math.fsum(np.concatenate([c.values for c in cl]).astype(np.float64)) == pytest.approx(
        exp["sum_values_total"], rel=REL
    )
    for c, first in zip(cl, exp["first_voxel_of_each_cluster"]):
        if first is None:
            assert len(c) == 0
            continue
        first = Checked(first)
        assert int(c.index[0]) == first["index"] and float(c.values[0]) == first["value"]
        assert list(c.coords[0]) == first["coords"]
        assert not first.unread()
    assert not exp.unread()


def check_image(exp, img, position):
    exp = Checked(exp)
    assert exp["position"] == position
    assert exp["projection_id"] == img.meta.projection_id
    check_meta(exp["meta"], img.meta)
    data = img.data
    assert data.dtype == np.float32
    assert list(data.shape) == exp["shape"] and data.size == exp["n_pixels"]
    d64 = data.astype(np.float64)
    assert math.fsum(d64.ravel()) == pytest.approx(exp["sum_values"], rel=REL)
    grids = np.indices(data.shape)
    for ax in range(data.ndim):
        assert math.fsum((grids[ax] * d64).ravel()) == pytest.approx(exp["sum_value_times_coord"][ax], rel=REL)
    flat = np.arange(data.size, dtype=np.float64)
    assert math.fsum(flat * d64.ravel()) == pytest.approx(exp["sum_value_times_flat_index"], rel=REL)
    assert float(data.min()) == exp["min_value"] and float(data.max()) == exp["max_value"]
    assert int(np.count_nonzero(data)) == exp["count_nonzero"]
    assert sha(data, "<f4") == exp["sha256_c_order_f4le"]
    for s in exp["samples"]:
        s = Checked(s)
        assert float(data[tuple(s["coords"])]) == s["value"]
        assert float(data.ravel()[s["flat_index"]]) == s["value"]
        assert not s.unread()
    assert not exp.unread()


def check_particles(exp, pset):
    exp = Checked(exp)
    assert len(pset) == exp["n_particles"]
    got = pset.to_dicts()
    for g, e in zip(got, exp["particles"]):
        assert set(g) == set(e) and len(e) == 25
        assert g == e
    assert pset.array.dtype.itemsize == 344
    assert not exp.unread()


@pytest.mark.parametrize("name", ["ref_sparse2d", "ref_sparse3d", "ref_tensor2d"])
def test_reference_file_matches_expected_json(name):
    path = data_path(f"larcv3/{name}.h5")
    expected = json.loads(data_path(f"larcv3/{name}.expected.json").read_text())
    with open_larcv3(path) as r:
        assert len(r) == expected["n_entries"]
        assert sorted((p.type, p.producer) for p in r.products) == sorted(
            (p["type"], p["producer"]) for p in expected["products"]
        )
        events = r.read_range(0, len(r))
    for ev, exp_entry in zip(events, expected["entries"], strict=True):
        exp_entry = Checked(exp_entry)
        assert ev.entry == exp_entry["entry"]
        eid = exp_entry["event_id"]
        assert ev.event_id.as_tuple() == (eid["run"], eid["subrun"], eid["event"])
        for gname, exp in exp_entry["products"].items():
            exp = Checked(exp)
            key = f"{exp['type']}/{exp['producer']}"
            assert gname == f"{exp['type']}_{exp['producer']}"
            value = ev.products[key]
            if exp["type"] == "particle":
                check_particles(exp, value)
                continue
            assert len(value) == exp["n_projections"]
            for pos, (e, v) in enumerate(zip(exp["projections"], value, strict=True)):
                {"sparse2d": check_sparse, "sparse3d": check_sparse, "cluster2d": check_cluster,
                 "cluster3d": check_cluster, "image2d": check_image}[exp["type"]](e, v, pos)  # fmt: skip
            assert not exp.unread()
        assert not exp_entry.unread()


def test_cosmic_tagging_light_facts():
    with open_larcv3(data_path("larcv3/cosmic_tagging_light.h5")) as r:
        assert len(r) == 5
        keys = {p.key for p in r.products}
        assert {"sparse2d/sbndwire", "sparse2d/sbnd_cosmicseg", "cluster2d/sbndsegmerged",
                "cluster2d/sbndneutrino", "particle/sbndneutrino"} <= keys  # fmt: skip
        events = r.read_range(0, 5)
        block = r.read_sparse_block("sparse2d/sbndwire", 0, 5)
        labels = r.read_sparse_block("sparse2d/sbnd_cosmicseg", 0, 5)
    total = sum(len(p) for ev in events for p in ev.products["sparse2d/sbndwire"])
    assert total == 276_764 == block.index.size == int(block.counts.sum())
    assert block.counts.shape == (5, 3)
    for ev in events:
        wires = ev.products["sparse2d/sbndwire"]
        segs = ev.products["sparse2d/sbnd_cosmicseg"]
        assert len(wires) == len(segs) == 3
        for w, s in zip(wires, segs):
            assert w.meta.number_of_voxels == (2048, 1280)
            np.testing.assert_array_equal(w.index, s.index)
            assert set(np.unique(s.values).tolist()) <= {0.0, 1.0, 2.0}
            assert w.values.min() >= 5.0
    np.testing.assert_array_equal(block.index, labels.index)
    assert set(np.unique(labels.values).tolist()) == {0.0, 1.0, 2.0}
    assert sum(len(ev.products["particle/sbndneutrino"]) for ev in events) == 33
    assert all(ev.event_id.as_tuple() == (-1, -1, -1) for ev in events)
