"""`tpcflow generate` writes deterministic larcv3 files readable by the larcv3 reader."""

from __future__ import annotations

import h5py
import numpy as np

from tpcflow.cli.main import main
from tpcflow.io import open_larcv3
from tpcflow.sim.sbnd import generate_events


def test_generate_matches_in_memory_events(tmp_path, capsys):
    out = tmp_path / "synth.h5"
    assert main(["generate", str(out), "--events", "3", "--seed", "9", "--downsample", "2", "--quiet"]) == 0
    assert "wrote 3 events" in capsys.readouterr().out
    with open_larcv3(out) as r:
        assert len(r) == 3
        assert {p.key: p.projections for p in r.products} == {"sparse2d/sbndwire": 3, "sparse2d/sbnd_cosmicseg": 3}
        np.testing.assert_array_equal(r.event_ids, [[1, 0, 0], [1, 0, 1], [1, 0, 2]])
        for ev, ref in zip(r.read_range(0, 3), generate_events(3, 9, downsample=2)):
            for key in ("sparse2d/sbndwire", "sparse2d/sbnd_cosmicseg"):
                for a, b in zip(ev.products[key], ref.products[key]):
                    assert a.meta.number_of_voxels == (512, 320)
                    np.testing.assert_array_equal(a.index, b.index)
                    np.testing.assert_array_equal(a.values, b.values)


def test_same_seed_same_file_contents(tmp_path):
    paths = []
    for name, seed in (("a.h5", 5), ("b.h5", 5), ("c.h5", 6)):
        paths.append(tmp_path / name)
        assert main(["generate", str(paths[-1]), "-n", "2", "--seed", str(seed), "--downsample", "3",
                     "--compression", "0", "-q"]) == 0
    data = []
    for p in paths:
        with h5py.File(p, "r") as f:
            data.append(f["Data/sparse2d_sbndwire_group/voxels"][:])
    assert np.array_equal(data[0], data[1])
    assert data[0].shape != data[2].shape or not np.array_equal(data[0], data[2])


def test_bad_options_fail_cleanly(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "x.h5"), "--events", "-1", "-q"]) == 1
    assert "--events must be >= 0" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "x.h5"), "--compression", "12", "-q"]) == 1
    assert "--compression" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "x.h5"), "--workers", "0", "-q"]) == 1
    assert "--workers must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()
