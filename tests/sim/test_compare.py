"""Synthetic statistics stay within tolerance bands of the real CosmicTagger file."""

from __future__ import annotations

import pytest
from conftest import data_path

from tpcflow.sim.compare import format_table, main, stats_from_events, stats_from_file
from tpcflow.sim.sbnd import generate_events

REAL = "larcv3/cosmic_tagging_light.h5"


@pytest.fixture(scope="module")
def real():
    return stats_from_file(data_path(REAL))


@pytest.fixture(scope="module")
def synth():
    return stats_from_events(generate_events(6, seed=0))


def test_real_file_statistics(real):
    assert real["all"]["events"] == 5
    assert round(real["all"]["voxels"] * 3 * 5) == 276_764
    assert real["all"]["charge_min"] >= 5.0
    assert abs(real["all"]["background"] + real["all"]["cosmic"] + real["all"]["neutrino"] - 1) < 1e-12


def test_synthetic_within_bands_of_real(real, synth):
    for group in ("plane 0", "plane 1", "plane 2", "all"):
        r, s = real[group], synth[group]
        assert 0.65 < s["occupancy"] / r["occupancy"] < 1.5, (group, s["occupancy"], r["occupancy"])
        assert 0.7 < s["charge_p90"] / r["charge_p90"] < 1.4, (group, s["charge_p90"], r["charge_p90"])
        assert s["charge_min"] >= 5.0
        for cls in ("background", "cosmic", "neutrino"):
            assert abs(s[cls] - r[cls]) < 0.12, (group, cls, s[cls], r[cls])
    assert 7.0 < synth["all"]["charge_median"] < 12.0
    assert 0.005 < synth["all"]["occupancy"] < 0.009
    # charge and label ids are the same voxels, so the label table covers every voxel
    assert abs(sum(synth["all"][c] for c in ("background", "cosmic", "neutrino")) - 1) < 1e-12


def test_table_and_command(real, synth, capsys):
    table = format_table(real, synth)
    assert table.count("\n") == 10 and "charge median" in table and "plane 2 synth" in table
    assert main([str(data_path(REAL)), "--events", "1", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "| occupancy |" in out and "synthetic: 1 events, seed 3" in out
