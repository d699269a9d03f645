"""Synthetic statistics stay within tolerance bands of the real CosmicTagger file."""

from __future__ import annotations

import pytest
from conftest import data_path

from tpcflow.sim.compare import (
    file_events,
    format_structure,
    format_table,
    main,
    stats_from_events,
    stats_from_file,
    structure_from_events,
)
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


@pytest.fixture(scope="module")
def structure():
    real = structure_from_events(file_events(data_path(REAL)))
    return real, structure_from_events(generate_events(4, seed=0))


def test_structure_around_tracks_within_bands_of_real(structure):
    """The structure the labels depend on: the time-direction halo, blips far from the tracks, noise.

    Bands from the comparison in ``docs/synthetic.md`` (5 real events, 20 synthetic ones).
    """
    real, synth = structure
    assert set(real) == set(synth) == {"plane 0", "plane 1", "plane 2"}
    for plane in real:
        r, s = real[plane], synth[plane]
        # the halo of background voxels lies along the time axis, as in the real labels
        assert s["halo_tick"] > 10 * s["halo_wire"] and abs(s["halo_tick"] - r["halo_tick"]) < 0.15, (plane, s, r)
        assert abs(s["halo"] - r["halo"]) < 0.15, (plane, s["halo"], r["halo"])
        # the neutrino's blips: small clusters and voxels far from its main tracks
        assert s["neutrino_small"] > 0.02 and abs(s["cosmic_small"] - r["cosmic_small"]) < 0.02, (plane, s, r)
        assert abs(s["neutrino_far5"] - r["neutrino_far5"]) < 0.12, (plane, s["neutrino_far5"], r["neutrino_far5"])
        assert abs(s["neutrino_far20"] - r["neutrino_far20"]) < 0.08, (plane, s["neutrino_far20"], r["neutrino_far20"])
        # noise hits: which TPC side is noisy, how many, and their streaks along the ticks
        for side in ("noise_low", "noise_high"):
            assert 0.6 < s[side] / r[side] < 1.6, (plane, side, s[side], r[side])
        assert abs(s["noise_streak"] - r["noise_streak"]) < 0.2, (plane, s["noise_streak"], r["noise_streak"])


def test_structure_table(structure):
    table = format_structure(*structure)
    assert table.count("\n") == 16 and "neutrino voxels > 20 from its main tracks" in table
    with pytest.raises(ValueError, match="no events"):
        structure_from_events([])
