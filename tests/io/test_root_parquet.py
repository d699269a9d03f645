"""Parquet beside ROOT (issue 13): a Parquet copy of a real tree reads as the tree does."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot
from conftest import data_path

from tpcflow.errors import DataFormatError
from tpcflow.io.root import DataReader, ParquetReader, open_reader

pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install 'tpcflow[parquet]')")
BRANCHES = ["NJet", "Jet_Px", "Jet_E", "Jet_ID", "MET_px", "NMuon", "Muon_Charge"]


@pytest.fixture(scope="module")
def hzz_parquet(tmp_path_factory):
    path = tmp_path_factory.mktemp("pq") / "hzz.parquet"
    arrays = uproot.open(data_path("root/uproot-HZZ.root"))["events"].arrays(BRANCHES)
    ak.to_parquet(arrays, path, row_group_size=700)  # reads below cross row groups
    return path


def test_a_parquet_copy_reads_like_the_root_tree(hzz_parquet):
    root = DataReader(data_path("root/uproot-HZZ.root"), include=BRANCHES)
    pq = open_reader(hzz_parquet, include=BRANCHES, tree="ignored")
    assert isinstance(pq, ParquetReader) and pq.num_entries == root.num_entries == 2421
    assert {k: (b.kind, b.dtype) for k, b in pq.branches.items()} == {
        k: (b.kind, b.dtype) for k, b in root.branches.items()}
    for start, stop in ((0, 10), (650, 1500), (2400, 2421)):
        a, b = root.read(start, stop), pq.read(start, stop)
        for name in BRANCHES:
            assert ak.to_list(a[name]) == ak.to_list(b[name]), (name, start, stop)
    ra, pb = root.first_pass(), pq.first_pass()
    for name in BRANCHES:
        x, y = ra.branches[name], pb.branches[name]
        assert (x.jdim, x.min, x.max, x.values) == (y.jdim, y.min, y.max, y.values), name
    assert pq.is_jagged("Jet_Px") and not pq.is_jagged("NJet") and "Muon_Charge" in pq.all_branches()


def test_nullable_columns_become_empty_lists_and_nan(tmp_path):
    """Parquet written by pandas or pyarrow has nullable columns: a null list is empty, a null number no value."""
    import pyarrow.parquet as pq

    table = pa.table({"x": pa.array([1.0, None, 3.0]), "hits": pa.array([[1, 2], None, [3]]),
                      "name": pa.array(["a", "b", "c"])})
    pq.write_table(table, tmp_path / "n.parquet")
    reader = ParquetReader(tmp_path / "n.parquet")
    assert reader.skipped == {"name": "column type string is not a number or a list of numbers"}
    got = reader.read()
    np.testing.assert_array_equal(got["x"], [1.0, np.nan, 3.0])
    assert ak.to_list(got["hits"]) == [[1, 2], [], [3]]
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataFormatError, match="cannot read the file as Parquet"):
        ParquetReader(tmp_path / "junk.parquet")
