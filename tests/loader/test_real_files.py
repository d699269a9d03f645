"""The loader on the real larcv files (CosmicTagger SBND sample; larcv 3.5.1-written 3D file)."""

from __future__ import annotations

import numpy as np
from conftest import data_path
from loader_testdata import dense_reference

from tpcflow.io import open_larcv3
from tpcflow.loader import BatchLoader, cosmic_tagger_config


def test_cosmic_tagging_light_matches_reader():
    path = data_path("larcv3/cosmic_tagging_light.h5")
    reader = open_larcv3(path)
    loader = BatchLoader(cosmic_tagger_config([path], downsample=2, num_threads=2, random_access=0), batch_size=2)
    seen = []
    try:
        for batch in loader:
            assert batch["image"].shape[1:] == (3, 320, 512) and batch["label"].dtype == np.int64
            for b, e in enumerate(loader.last_entries):
                ref = dense_reference(reader, int(e), "sparse2d/sbndwire", downsample=2)
                np.testing.assert_allclose(batch["image"][b], ref, rtol=1e-5, atol=1e-4)
                lab = dense_reference(reader, int(e), "sparse2d/sbnd_cosmicseg", downsample=2, pooling="max")
                np.testing.assert_array_equal(batch["label"][b], lab.astype(np.int64))
            seen.extend(loader.last_entries.tolist())
    finally:
        loader.close()
    assert seen == [0, 1, 2, 3, 4]


def test_sparse3d_fillers_on_larcv_written_file():
    path = data_path("larcv3/ref_sparse3d.h5")
    reader = open_larcv3(path)
    cfg = {
        "ThreadProcessor": {
            "RandomAccess": 2,
            "InputFiles": [str(path)],
            "ProcessType": ["BatchFillerSparseTensor3D", "BatchFillerSparseToDense3D", "BatchFillerSparseCOO3D",
                            "BatchFillerCluster3D", "BatchFillerMultiLabel"],  # fmt: skip
            "ProcessName": ["padded", "dense", "coo", "cluster", "pdg"],
            "NumThreads": 1,
            "NumStorage": 2,
            "ProcessList": {
                "padded": {"Producer": "data", "MaxVoxels": 4000, "Channels": [0], "AllowEmpty": True},
                "dense": {"Producer": "data", "Downsample": 2, "Pooling": "sum", "DataType": "float64"},
                "coo": {"Producer": "data", "MaxVoxels": 4000},
                "cluster": {"Producer": "group", "Format": "coo", "MaxVoxels": 4000, "DataType": "int32"},
                "pdg": {"Producer": "mcst", "PdgClassList": [13, 22, 2212], "DataType": "uint8"},
            },
        }
    }
    loader = BatchLoader(cfg, batch_size=4)
    try:
        for batch in loader:
            assert batch["dense"].shape[1:] == (1, 64, 48, 80)
            rows = []
            for b, e in enumerate(loader.last_entries):
                ev = reader.read(int(e))
                sp = ev.products["sparse3d/data"][0]
                n = min(len(sp), 4000)
                np.testing.assert_array_equal(batch["padded"][b, 0, :n], np.column_stack([sp.coords[:n], sp.values[:n]]))
                assert (batch["padded"][b, 0, n:] == -999).all()
                want = np.zeros((64, 48, 80))
                np.add.at(want, tuple((sp.coords >> 2).T), sp.values.astype(np.float64))
                np.testing.assert_allclose(batch["dense"][b, 0], want, rtol=1e-9, atol=1e-9)
                rows.append(np.column_stack([np.full(n, b), np.zeros(n), sp.coords[:n], sp.values[:n]]))
                pdg = ev.products["particle/mcst"].array["pdg"]
                np.testing.assert_array_equal(batch["pdg"][b], [int(p in pdg) for p in (13, 22, 2212)])
                cl = batch["cluster"][batch["cluster"][:, 0] == b]
                clusters = ev.products["cluster3d/group"][0].clusters
                want = np.concatenate([np.column_stack([c.coords, np.full(len(c), k)]) for k, c in enumerate(clusters)])
                np.testing.assert_array_equal(cl[:, 2:], want[:4000])
            np.testing.assert_allclose(batch["coo"], np.concatenate(rows).astype(np.float32))
    finally:
        loader.close()
