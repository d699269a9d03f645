"""DataReader on the real ROOT files in ../shared/data/root and larcv2/."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot
from conftest import data_path

from tpcflow.errors import DataFormatError, ProductNotFoundError
from tpcflow.io.root import BranchNotFoundError, DataReader, UnreadableBranchError

NANO = "root/nanoAOD_2015_CMS_Open_Data_ttbar.root"


def test_nanoaod_branch_kinds_and_specs():
    path = data_path(NANO)
    r = DataReader(path)
    assert r.tree_name == "Events" and r.num_entries == 200
    specs = r.first_pass()
    assert len(specs.branches) == 947 and len(specs.flat) == 603 and len(specs.jagged) == 344
    assert specs.branches["Jet_pt"].counter == "nJet"
    # independent check of a few ranges and multiplicities against uproot's own arrays
    t = uproot.open(path)["Events"]
    for name in ("Jet_pt", "Muon_eta", "Electron_charge"):
        a = t[name].array(library="ak")
        s = specs.branches[name]
        flat = ak.to_numpy(ak.flatten(a))
        assert s.kind == "jagged" and s.jdim == int(ak.max(ak.num(a)))
        assert s.min == pytest.approx(float(flat.min())) and s.max == pytest.approx(float(flat.max()))
        assert s.values == len(flat)
    met = t["MET_pt"].array(library="np")
    assert specs.branches["MET_pt"].kind == "flat"
    assert specs.branches["MET_pt"].max == pytest.approx(float(met.max()))
    assert specs.width == sum(s.width for s in specs.branches.values())


def test_hzz_and_zmumu_selection():
    r = DataReader(data_path("root/uproot-HZZ.root"))
    kinds = [b.kind for b in r.branches.values()]
    assert len(r.branches) == 51 and kinds.count("jagged") == 23
    z = DataReader(data_path("root/uproot-Zmumu.root"))
    assert len(z.branches) == 19 and all(b.kind == "flat" for b in z.branches.values())
    assert "Type" in z.skipped and "string" in z.skipped["Type"]


def test_include_exclude_globs_and_nevts():
    r = DataReader(data_path("root/uproot-HZZ.root"), include=["Muon_*", "NMuon"], exclude=["*_Iso"], nevts=100)
    assert sorted(r.branches) == sorted(["Muon_Px", "Muon_Py", "Muon_Pz", "Muon_E", "Muon_Charge", "NMuon"])
    assert r.num_entries == 100
    chunks = list(r.iterate(chunk_size=30))
    assert [(a, b) for a, b, _ in chunks] == [(0, 30), (30, 60), (60, 90), (90, 100)]
    specs = r.first_pass()
    assert specs.nevents == 100
    full = uproot.open(data_path("root/uproot-HZZ.root"))["events"]["Muon_Px"].array(entry_stop=100)
    assert specs.branches["Muon_Px"].max == pytest.approx(float(ak.max(full)))


def test_missing_branch_names_closest():
    with pytest.raises(BranchNotFoundError) as err:
        DataReader(data_path("root/uproot-HZZ.root"), include=["Muon_Pxx"])
    msg = str(err.value)
    assert "Muon_Pxx" in msg and "Muon_Px" in msg and "uproot-HZZ.root" in msg


def test_explicit_string_branch_is_refused():
    with pytest.raises(UnreadableBranchError, match="exclude"):
        DataReader(data_path("root/uproot-Zmumu.root"), include=["Type", "E1"])


def test_memberwise_object_branch_names_branch_and_exclusion():
    path = data_path("larcv2/example_larcv.root")
    with pytest.raises(UnreadableBranchError) as err:
        DataReader(path, tree="cluster3d_mcst_tree")
    msg = str(err.value)
    assert "_voxel_vv._voxel_v" in msg and "memberwise" in msg and "exclude" in msg
    # the advice works: excluding it (by its last component) lets the reader open the tree
    r = DataReader(path, tree="cluster3d_mcst_tree", exclude=["_voxel_vv._voxel_v"])
    assert r.first_pass().nevents == 5 and not any(k.endswith("._voxel_v") for k in r.branches)
    skip = DataReader(path, tree="cluster3d_mcst_tree", on_unreadable="skip")
    assert any("memberwise" in why for why in skip.skipped.values())


def test_bad_tree_and_bad_file(tmp_path):
    with pytest.raises(ProductNotFoundError, match="image2d_wire_tree"):
        DataReader(data_path("larcv2/example_larcv.root"), tree="nope")
    bad = tmp_path / "x.root"
    bad.write_bytes(b"not a root file at all" * 10)
    with pytest.raises(DataFormatError, match="x.root"):
        DataReader(bad)
    with pytest.raises(DataFormatError, match="does not exist"):
        DataReader(tmp_path / "missing.root")


def test_reader_pickles_and_reopens():
    import pickle

    r = DataReader(data_path("root/uproot-HZZ.root"), include=["NJet"])
    r2 = pickle.loads(pickle.dumps(r))
    np.testing.assert_array_equal(np.asarray(r2.read(0, 50)["NJet"]), np.asarray(r.read(0, 50)["NJet"]))


def test_ttree_subclasses_are_trees(monkeypatch):
    """Issue 13: TNtuple and TNtupleD derive from TTree and uproot reads them as trees; the class
    name was compared with "TTree" exactly ("no TTree in this file").  No real TNtuple file is in
    the shared data and uproot cannot write one, so the directory reports the HZZ tree as one."""

    real = uproot.reading.ReadOnlyDirectory.classnames

    def as_ntuple(self, *args, **kwargs):
        return {k: ("TNtupleD" if v == "TTree" else v) for k, v in real(self, *args, **kwargs).items()}

    monkeypatch.setattr(uproot.reading.ReadOnlyDirectory, "classnames", as_ntuple)
    with DataReader(data_path("root/uproot-HZZ.root")) as reader:
        assert reader.tree_name == "events" and reader.trees() == {"events": 2421}
        assert reader._is_tree_class("TNtuple") and not reader._is_tree_class("TH1F")
        assert len(reader.read(0, 10, ["NJet"])["NJet"]) == 10
