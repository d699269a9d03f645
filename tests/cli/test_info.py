"""`tpcflow info` on real larcv3, larcv2 and ROOT files, generated files, and bad input."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from conftest import data_path

from tpcflow.cli.main import main
from tpcflow.sim.sbnd import generate_file

COSMIC = "larcv3/cosmic_tagging_light.h5"


def run_json(capsys, *args):
    assert main(["info", "--json", *map(str, args)]) == 0
    return json.loads(capsys.readouterr().out)


def test_cosmic_tagging_json_events(capsys):
    path = data_path(COSMIC)
    d = run_json(capsys, "--events", path)
    assert d["entries"] == 5
    prods = {(p["type"], p["producer"]): p for p in d["products"]}
    assert set(prods) == {("sparse2d", "sbndwire"), ("sparse2d", "sbnd_cosmicseg"), ("cluster2d", "sbndsegmerged"),
                          ("cluster2d", "sbndneutrino"), ("particle", "sbndneutrino")}
    assert prods[("sparse2d", "sbndwire")]["projections"] == 3
    assert prods[("sparse2d", "sbndwire")]["voxels"] == 276_764
    assert len(d["events"]) == 5
    wire = [ev["products"]["sparse2d/sbndwire"] for ev in d["events"]]
    assert all(len(w) == 3 for w in wire)
    assert sum(p["voxels"] for w in wire for p in w) == 276_764
    # per-projection voxels and sums against the raw datasets
    with h5py.File(path, "r") as f:
        g = f["Data/sparse2d_sbndwire_group"]
        ext, vox = g["voxel_extents"][:], g["voxels"][:]
    for row, item in zip(ext, [p for w in wire for p in w]):
        vals = vox["value"][row["first"] : row["first"] + row["N"]]
        assert item["voxels"] == row["N"]
        assert item["sum"] == pytest.approx(float(vals.astype(np.float64).sum()), rel=1e-9)
    ev0 = d["events"][0]
    assert {k: ev0[k] for k in ("entry", "run", "subrun", "event")} == {"entry": 0, "run": -1, "subrun": -1, "event": -1}
    parts = [p for ev in d["events"] for p in ev["products"]["particle/sbndneutrino"]]
    assert len(parts) == 33 and all({"pdg", "energy_init"} <= set(p) for p in parts)
    clusters = ev0["products"]["cluster2d/sbndsegmerged"]
    assert len(clusters) == 3 and all(c["voxels"] > 0 and c["sum"] > 0 for c in clusters)


def test_text_summary_of_real_files(capsys):
    assert main(["info", str(data_path(COSMIC)), str(data_path("larcv2/example_larcv.root"))]) == 0
    out = capsys.readouterr().out
    assert "5 entries" in out and "sparse2d/sbndwire" in out and "276,764" in out and "0.704%" in out
    assert "image2d/wire" in out and "512x512" in out


def test_larcv2_and_plain_root_json(capsys):
    d = run_json(capsys, "--events", data_path("larcv2/example_larcv.root"))
    assert d["format"] == "larcv2" and d["entries"] == 5
    img = next(p for p in d["products"] if p["type"] == "image2d")
    assert img["producer"] == "wire" and img["projections"] == 3
    assert [(e["run"], e["subrun"], e["event"]) for e in d["events"]] == [(1, 0, i) for i in range(1, 6)]
    assert len(d["events"][0]["products"]["image2d/wire"]) == 3
    r = run_json(capsys, data_path("root/uproot-Zmumu.root"))
    assert r["format"] == "root" and r["entries"] == 2304


def test_generated_file_and_several_files(tmp_path, capsys):
    path = generate_file(tmp_path / "gen.h5", 2, seed=4, downsample=2)
    d = run_json(capsys, "--events", path, path)
    assert isinstance(d, list) and len(d) == 2
    first = d[0]
    assert first["entries"] == 2
    assert [(p["type"], p["producer"], p["projections"]) for p in first["products"]] == [
        ("sparse2d", "sbnd_cosmicseg", 3), ("sparse2d", "sbndwire", 3)]
    assert [e["event"] for e in first["events"]] == [0, 1]
    wire = first["events"][1]["products"]["sparse2d/sbndwire"]
    labels = first["events"][1]["products"]["sparse2d/sbnd_cosmicseg"]
    assert [w["voxels"] for w in wire] == [lb["voxels"] for lb in labels]


def test_bad_input_gives_one_clear_error(tmp_path, capsys):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    good = generate_file(tmp_path / "ok.h5", 1, seed=1, downsample=3)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[:2000])
    for bad, why in ((tmp_path / "missing.h5", "file not found"), (text, "not a larcv3 (HDF5) or ROOT file"),
                     (truncated, "truncated")):
        assert main(["info", str(bad)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("tpcflow info: error: ") and why in err and str(bad) in err
        assert "Traceback" not in err


def test_empty_projections_and_entries(tmp_path, capsys):
    from tpcflow.io import Event, EventID, ImageMeta, SparseProjection, write_larcv3

    meta = [ImageMeta(p, (4, 5), (4.0, 5.0), (0.0, 0.0)) for p in range(2)]
    full = SparseProjection(meta[0], np.array([1, 7], np.uint64), np.array([2.5, 4.0], np.float32))
    empty = SparseProjection(meta[1], np.zeros(0, np.uint64), np.zeros(0, np.float32))
    events = [
        Event(EventID(3, 1, 10), {"sparse2d/x": [full, empty]}),
        Event(EventID(3, 1, 11), {"sparse2d/x": [SparseProjection(meta[0], empty.index, empty.values),
                                                SparseProjection(meta[1], full.index, full.values)]}),
        Event(EventID(3, 1, 12), {"sparse2d/x": [SparseProjection(meta[0], empty.index, empty.values), empty]}),
    ]
    path = write_larcv3(tmp_path / "sparse.h5", events)
    d = run_json(capsys, "--events", path)
    got = [[(p["voxels"], p["sum"]) for p in ev["products"]["sparse2d/x"]] for ev in d["events"]]
    assert got == [[(2, 6.5), (0, 0.0)], [(0, 0.0), (2, 6.5)], [(0, 0.0), (0, 0.0)]]
    assert [ev["event"] for ev in d["events"]] == [10, 11, 12]
    assert d["products"][0]["voxels"] == 4 and d["products"][0]["occupancy"] == pytest.approx(4 / (6 * 20))


@pytest.mark.parametrize("name", ["ref_sparse2d", "ref_sparse3d", "ref_tensor2d"])
def test_events_match_reference_expectations(name, capsys):
    """Per-entry voxels / sums / particles of `info --json --events` equal the reference JSON (numpy-computed)."""
    path = data_path(f"larcv3/{name}.h5")
    expected = json.loads(data_path(f"larcv3/{name}.expected.json").read_text())
    d = run_json(capsys, "--events", path)
    assert d["entries"] == expected["n_entries"] == len(d["events"])
    for ev, exp in zip(d["events"], expected["entries"]):
        assert [ev["run"], ev["subrun"], ev["event"]] == [exp["event_id"][k] for k in ("run", "subrun", "event")]
        for group, prod in exp["products"].items():
            got = ev["products"][f"{prod['type']}/{prod['producer']}"]
            if prod["type"] == "particle":
                assert [(p["pdg"], p["energy_init"]) for p in got] == [
                    (p["pdg"], pytest.approx(p["energy_init"])) for p in prod["particles"]]
                continue
            assert len(got) == prod["n_projections"], group
            for g, proj in zip(got, prod["projections"]):
                if prod["type"].startswith("sparse"):
                    n, total = proj["n_voxels"], proj["sum_values"]
                elif prod["type"].startswith("cluster"):
                    n, total = sum(proj["cluster_n_voxels"]), sum(proj["cluster_sum_values"])
                else:
                    n, total = proj["count_nonzero"], proj["sum_values"]
                assert g["voxels"] == n, (group, ev["entry"])
                assert g["sum"] == pytest.approx(total, rel=1e-6, abs=1e-9), (group, ev["entry"])


def test_per_projection_summary_counts_and_sums_each_projection_on_its_own(tmp_path, capsys):
    """An entry with 2 projections among entries with 3, and a value near FLT_MAX (issue 16, item 2)."""
    import json

    import numpy as np

    from tpcflow.io import Event, EventID, ImageMeta, SparseProjection, open_larcv3, write_larcv3

    def proj(p, values):
        meta = ImageMeta(p, (16, 8), (16.0, 8.0), (0.0, 0.0))
        return SparseProjection(meta, np.arange(len(values), dtype=np.uint64), np.asarray(values, np.float32))

    huge = np.float32(3.4e38)
    events = [
        Event(EventID(1, 0, 0), {"sparse2d/q": [proj(0, [huge, 1.0]), proj(1, [2.0]), proj(2, [3.0, 4.0])]}),
        Event(EventID(1, 0, 1), {"sparse2d/q": [proj(0, [5.0]), proj(1, [6.0, 7.0])]}),
        Event(EventID(1, 0, 2), {"sparse2d/q": [proj(0, [8.0]), proj(1, []), proj(2, [9.0])]}),
    ]
    path = write_larcv3(tmp_path / "q.h5", events)
    assert main(["info", "--json", "--events", str(path)]) == 0
    got = json.loads(capsys.readouterr().out)["events"]
    with open_larcv3(path) as r:
        for e, ev in enumerate(got):
            want = r.read(e).products["sparse2d/q"]
            assert len(ev["products"]["sparse2d/q"]) == len(want)  # 2, not a padded third
            for g, w in zip(ev["products"]["sparse2d/q"], want, strict=True):
                assert g["voxels"] == len(w)
                assert g["sum"] == pytest.approx(float(w.values.sum(dtype=np.float64)), rel=1e-12)
    assert got[1]["products"]["sparse2d/q"][1]["sum"] == 13.0  # after the huge value, still exact
