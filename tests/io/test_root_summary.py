"""summarize / format_summary: what ``tpcflow info FILE.root`` shows."""

from __future__ import annotations

import uproot
from conftest import data_path

from tpcflow.io.root import format_summary, summarize


def test_summarize_nanoaod():
    path = data_path("root/nanoAOD_2015_CMS_Open_Data_ttbar.root")
    d = summarize(path)
    assert d["events"] == 200 and d["trees"] == {"Events": 200}
    assert d["branches"] == 947 and len(d["flat"]) == 603 and len(d["jagged"]) == 344
    assert d["time_s"] > 0 and d["memory_mb"] > 0 and d["peak_memory_mb"] > 0
    pt = uproot.open(path)["Events"]["Jet_pt"].array(library="np")
    assert d["specs"]["Jet_pt"]["jdim"] == max(len(v) for v in pt)
    text = format_summary(d)
    assert "200 events" in text and "603 flat, 344 jagged" in text
    assert "Jet_pt values in [" in text and "counter=nJet" in text
    assert len(format_summary(d, max_branches=2).splitlines()) < 20


def test_summarize_larcv2_file_lists_trees_and_skipped():
    d = summarize(data_path("larcv2/example_larcv.root"), tree="cluster3d_mcst_tree")
    assert len(d["trees"]) == 6 and d["events"] == 5
    assert any("memberwise" in why for why in d["skipped"].values())
    assert "skipped branches" in format_summary(d)
