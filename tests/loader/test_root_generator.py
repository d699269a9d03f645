"""DataGenerator: chunks against uproot's arrays padded by hand, mixing, split, shuffle, torch view."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import uproot
from conftest import data_path

from tpcflow.errors import ConfigError, DataFormatError
from tpcflow.loader.root_generator import DataGenerator, pad_jagged, read_file_list
from tpcflow.loader.root_torch import RootIterableDataset

HZZ = "root/uproot-HZZ.root"


def hand_padded(path, tree, specs, pad_value, start, stop):
    """Independent reference: per-event, per-branch padding and min/max scaling of uproot's arrays."""
    t = uproot.open(path)[tree]
    rows, masks = [], []
    arrays = {name: t[name].array(entry_start=start, entry_stop=stop, library="np") for name, _, _ in specs.layout()}
    for i in range(stop - start):
        row, mask = [], []
        for name, _, w in specs.layout():
            s = specs.branches[name]
            vals = [arrays[name][i]] if s.kind == "flat" else list(arrays[name][i])[:w]
            lo, hi = s.min, s.max
            for v in vals:
                v = float(v)
                ok = np.isfinite(v)
                row.append(((v - lo) / (hi - lo) if hi > lo else v - lo) if ok else pad_value)
                mask.append(bool(ok))
            for _ in range(w - len(vals)):
                row.append(pad_value)
                mask.append(False)
        rows.append(row)
        masks.append(mask)
    return np.array(rows, dtype=np.float64), np.array(masks)


@pytest.mark.parametrize("relpath,tree", [(HZZ, "events"), ("root/nanoAOD_2015_CMS_Open_Data_ttbar.root", "Events")])
def test_chunks_match_hand_padded_uproot(relpath, tree):
    path = data_path(relpath)
    include = None if relpath == HZZ else ["Jet_*", "Muon_pt", "nJet", "MET_*", "Electron_eta"]
    g = DataGenerator([path], include=include, chunk_size=97, shuffle=False, pad_value=-1.0)
    start = 0
    for chunk in g.iterate("all"):
        n = len(chunk)
        np.testing.assert_array_equal(chunk.entry, np.arange(start, start + n))
        ref_x, ref_m = hand_padded(path, tree, g.specs, -1.0, start, start + n)
        np.testing.assert_array_equal(chunk.mask, ref_m)
        np.testing.assert_allclose(chunk.x, ref_x, rtol=2e-6, atol=2e-6)
        start += n
    assert start == g.nevents("all")


def test_codec_variants_give_identical_chunks():
    gens = [DataGenerator([data_path(f)], chunk_size=1000, seed=3, validation_split=0.25)
            for f in (HZZ, "root/uproot-HZZ-lz4.root", "root/uproot-HZZ-zstd.root")]
    for subset in ("train", "validation"):
        chunks = [list(g.iterate(subset, epoch=1)) for g in gens]
        assert len(chunks[0]) == len(chunks[1]) == len(chunks[2]) > 0
        for a, b, c in zip(*chunks):
            for field in ("x", "mask", "entry"):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
                np.testing.assert_array_equal(getattr(a, field), getattr(c, field))


def test_normalisation_padding_and_width():
    g = DataGenerator([data_path(HZZ)], chunk_size=2421, shuffle=False, pad_value=7.5)
    c = next(g.iterate("all"))
    assert c.x.shape == (2421, g.specs.width) and c.x.dtype == np.float32 and len(g.columns) == g.width
    assert np.all(c.x[c.mask] >= -1e-6) and np.all(c.x[c.mask] <= 1 + 1e-6)
    assert np.all(c.x[~c.mask] == 7.5) and (~c.mask).any()
    raw = DataGenerator([data_path(HZZ)], chunk_size=2421, shuffle=False, normalise=False, specs=g.specs)
    met = uproot.open(data_path(HZZ))["events"]["MET_px"].array(library="np")
    np.testing.assert_array_equal(next(raw.iterate("all")).x[:, g.columns.index("MET_px")], met)


def test_pad_jagged_clips_and_matches_awkward():
    import awkward as ak

    a = ak.Array([[1.0, 2.0, 3.0], [], [4.0], [5.0, 6.0]])
    x, m = pad_jagged(a, 2, pad_value=-9.0)
    ref = ak.to_numpy(ak.fill_none(ak.pad_none(a, 2, clip=True), -9.0))
    np.testing.assert_array_equal(x, ref)
    np.testing.assert_array_equal(m, [[1, 1], [0, 0], [1, 0], [1, 1]])


def test_files_mixed_in_proportion_and_labels_from_file_list(tmp_path):
    files = [data_path(HZZ), data_path("root/uproot-HZZ-zstd.root")]
    small = DataGenerator(files, labels=[0, 1], nevts=[2421, 605], chunk_size=500, shuffle=True, seed=1)
    assert len(small) == 7
    seen = np.zeros(2, int)
    for c in small.iterate("all"):
        frac = np.bincount(c.file, minlength=2) / len(c)
        assert abs(frac[1] - 605 / (2421 + 605)) < 0.02  # every chunk keeps the 4:1 proportion
        np.testing.assert_array_equal(c.y, c.file)  # labels follow the file list
        seen += np.bincount(c.file, minlength=2)
    assert seen.tolist() == [2421, 605]
    lst = tmp_path / "files.txt"
    lst.write_text(f"# comment\n{files[0]} 0\n\n{files[1]} 1\n")
    assert read_file_list(lst) == ([str(files[0]), str(files[1])], [0, 1])
    lst.write_text(f"{files[0]} 0\n{files[1]}\n")
    with pytest.raises(DataFormatError, match="every line"):
        read_file_list(lst)
    with pytest.raises(DataFormatError, match="cannot read the file list"):
        read_file_list(tmp_path / "missing.txt")


def test_split_shuffle_and_epochs():
    g = DataGenerator([data_path(HZZ)], chunk_size=400, seed=5, validation_split=0.3)
    train = np.concatenate([c.entry for c in g.iterate("train", epoch=0)])
    val = np.concatenate([c.entry for c in g.iterate("validation", epoch=0)])
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 2421
    assert len(train) == g.nevents("train") and abs(len(val) / 2421 - 0.3) < 0.05
    again = np.concatenate([c.entry for c in g.iterate("train", epoch=0)])
    later = np.concatenate([c.entry for c in g.iterate("train", epoch=1)])
    np.testing.assert_array_equal(train, again)  # same epoch, same order
    assert not np.array_equal(train, later) and np.array_equal(np.sort(train), np.sort(later))
    assert not np.array_equal(train, np.sort(train))  # shuffled
    before = g.epoch
    list(g)
    assert g.epoch == before + 1


def test_label_branch_and_bad_options():
    g = DataGenerator([data_path(HZZ)], labels="NMuon", include=["Jet_*", "NMuon", "MET_*"], shuffle=False)
    assert "NMuon" not in g.specs.branches
    c = next(g.iterate("all"))
    nmuon = uproot.open(data_path(HZZ))["events"]["NMuon"].array(library="np")
    assert len(c) == 807 and c.y.dtype == np.int64
    np.testing.assert_array_equal(c.y, nmuon[c.entry])
    with pytest.raises(ConfigError, match="one label per file"):
        DataGenerator([data_path(HZZ)], labels=[0, 1])
    with pytest.raises(ConfigError, match="validation_split"):
        DataGenerator([data_path(HZZ)], validation_split=1.0)


def test_files_with_different_branches_are_refused():
    with pytest.raises(DataFormatError, match="include/exclude"):
        DataGenerator([data_path(HZZ), data_path("root/uproot-Zmumu.root")], labels=[0, 1])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_torch_dataset_sees_each_event_once(num_workers):
    g = DataGenerator([data_path(HZZ)], labels=[1], chunk_size=300, seed=2, validation_split=0.2,
                      include=["Muon_*", "NMuon"])
    ds = RootIterableDataset(g, subset="train", batch_size=64)
    entries, shapes = [], set()
    for b in torch.utils.data.DataLoader(ds, batch_size=None, num_workers=num_workers):
        assert b["x"].dtype == torch.float32 and b["mask"].dtype == torch.bool and b["y"].dtype == torch.int64
        shapes.add(b["x"].shape[1])
        entries.append(b["entry"].numpy())
    entries = np.concatenate(entries)
    assert shapes == {g.width} and len(entries) == g.nevents("train") == len(np.unique(entries))


def test_nan_inf_and_fixed_size_branches_in_a_written_file(tmp_path):
    """A small file written by uproot: NaN/inf are counted, masked and padded; float[3] is flat, dim 3."""
    import awkward as ak

    path = tmp_path / "nan.root"
    with uproot.recreate(path) as f:
        f.mktree("t", {"a": "float32", "v": ("float64", (3,)), "j": "var * float64"})
        f["t"].extend({"a": np.array([1.0, np.nan, 3.0, np.inf], dtype=np.float32),
                       "v": np.arange(12, dtype=np.float64).reshape(4, 3),
                       "j": ak.Array([[1.0, np.nan], [], [2.0, 5.0, -np.inf], [4.0]])})
        f["rn"] = {"x": np.zeros(2)}  # an RNTuple beside the tree: not a TTree, ignored
    with pytest.raises(DataFormatError, match="RNTuple"):
        DataGenerator([path], tree="rn")
    g = DataGenerator([path], chunk_size=10, shuffle=False, pad_value=-2.0)
    s = g.specs.branches
    assert (s["a"].nan, s["a"].inf, s["a"].min, s["a"].max) == (1, 1, 1.0, 3.0)
    assert s["v"].kind == "flat" and s["v"].dim == 3 and s["j"].kind == "jagged" and s["j"].jdim == 3
    assert (s["j"].nan, s["j"].inf, s["j"].min, s["j"].max) == (1, 1, 1.0, 5.0)
    c = next(g.iterate("all"))
    assert g.columns[:1] == ["a"] and g.columns[1:4] == ["v[0]", "v[1]", "v[2]"]
    np.testing.assert_array_equal(c.mask[:, 0], [True, False, True, False])
    np.testing.assert_allclose(c.x[:, 0], [0.0, -2.0, 1.0, -2.0])
    ja = g.columns.index("j[0]")
    np.testing.assert_array_equal(c.mask[:, ja:ja + 3], [[1, 0, 0], [0, 0, 0], [1, 1, 0], [1, 0, 0]])
    np.testing.assert_allclose(c.x[2, ja:ja + 3], [0.25, 1.0, -2.0])


def test_a_chunk_too_large_for_memory_is_refused_before_reading():
    """Issue 13: rows are W columns wide; chunk_size x W beyond max_chunk_bytes is a clear error, and a
    jdim cap makes the same chunk fit."""
    nano = data_path("root/nanoAOD_2015_CMS_Open_Data_ttbar.root")
    with pytest.raises(ConfigError, match=r"lower chunk_size to \d+ or less, or cap the jagged widths with jdim"):
        DataGenerator([nano], include=["Jet_*", "MET_pt"], chunk_size=10_000, max_chunk_bytes=10_000_000)
    g = DataGenerator([nano], include=["Jet_*", "MET_pt"], chunk_size=10_000, max_chunk_bytes=10_000_000, jdim=2)
    assert g.width == 1 + 2 * len(g.specs.jagged)
    g.close()
