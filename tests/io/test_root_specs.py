"""Specs JSON round trip and merging across files."""

from __future__ import annotations

import json

import pytest
from conftest import data_path
from hypothesis import given, settings
from hypothesis import strategies as st

from tpcflow.errors import DataFormatError
from tpcflow.io.root import BranchSpec, DataReader, Specs, load_specs, merge_specs, save_specs

HZZ = ("root/uproot-HZZ.root", "root/uproot-HZZ-lz4.root", "root/uproot-HZZ-zstd.root")


def test_codec_variants_give_identical_specs(tmp_path):
    specs = [DataReader(data_path(f)).first_pass() for f in HZZ]
    for s in specs[1:]:
        assert s.branches == specs[0].branches
    merged = merge_specs(specs)
    assert merged.nevents == 3 * 2421 and len(merged.files) == 3
    assert merged.branches["Jet_Px"].values == 3 * specs[0].branches["Jet_Px"].values
    path = save_specs(merged, tmp_path / "specs.json")
    back = load_specs(path)
    assert back.to_dict() == merged.to_dict()
    assert json.loads(path.read_text())["format"] == "tpcflow-root-specs"


def test_merge_of_halves_equals_whole():
    path = data_path("root/uproot-HZZ.root")
    whole = DataReader(path).first_pass()
    first = DataReader(path, nevts=1000).first_pass()
    r = DataReader(path)
    second = Specs(tree=whole.tree, nevents=whole.nevents - 1000,
                   branches={k: BranchSpec(kind=b.kind, dtype=b.dtype, dim=b.dim, counter=b.counter)
                             for k, b in whole.branches.items()})
    from tpcflow.io.root import flat_numpy, jagged_parts

    arrays = r.read(1000, None)
    for name, spec in second.branches.items():
        if spec.kind == "flat":
            spec.update(flat_numpy(arrays[name]))
        else:
            off, content = jagged_parts(arrays[name])
            spec.update(content[off[0]:off[-1]], jdim=int((off[1:] - off[:-1]).max(initial=0)))
    merged = merge_specs([first, second])
    for name, b in whole.branches.items():
        m = merged.branches[name]
        assert (m.min, m.max, m.jdim, m.values, m.nan) == (b.min, b.max, b.jdim, b.values, b.nan), name


def test_merge_rejects_kind_change_and_bad_json(tmp_path):
    a = Specs(tree="t", branches={"x": BranchSpec(kind="flat", dtype="float32")})
    b = Specs(tree="t", branches={"x": BranchSpec(kind="jagged", dtype="float32")})
    with pytest.raises(DataFormatError, match="'x'"):
        merge_specs([a, b])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataFormatError, match="bad.json"):
        load_specs(bad)
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(DataFormatError, match="tpcflow ROOT specs"):
        load_specs(bad)


finite = st.floats(allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(["flat", "jagged"]), lo=finite, hi=finite, jdim=st.integers(0, 50),
       nan=st.integers(0, 9), counter=st.one_of(st.none(), st.text("abcnJ", min_size=1, max_size=5)))
def test_specs_json_roundtrip(tmp_path_factory, kind, lo, hi, jdim, nan, counter):
    lo, hi = min(lo, hi), max(lo, hi)
    s = Specs(tree="Events", files=["a.root"], nevents=7,
              branches={"b": BranchSpec(kind=kind, dtype="float32", jdim=jdim, min=lo, max=hi, nan=nan,
                                        counter=counter)},
              skipped={"s": "strings are not numeric"})
    path = save_specs(s, tmp_path_factory.mktemp("specs") / "s.json")
    assert load_specs(path) == s
