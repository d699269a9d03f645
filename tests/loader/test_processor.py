"""ThreadProcessor and BatchLoader against the larcv3 reader, with worker processes."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from loader_testdata import PDGS, dense_reference, write_file

from tpcflow.io import open_larcv3
from tpcflow.loader import BatchFillError, BatchLoader, SlotState, ThreadProcessor

MAXV = 100


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("loader")
    return [write_file(d / "a.h5", 7, seed=11), write_file(d / "b.h5", 6, seed=12, start=7)]


def full_config(files, mode=0, threads=2, storage=3, worker="process"):
    return {
        "MainIO": {
            "RandomAccess": mode,
            "RandomSeed": 4,
            "InputFiles": [str(f) for f in files],
            "ProcessType": [
                "BatchFillerSparseToDense2D",
                "BatchFillerSparseToDense2D",
                "BatchFillerSparseTensor2D",
                "BatchFillerSparseCOO2D",
                "BatchFillerCluster2D",
                "BatchFillerPIDLabel",
            ],
            "ProcessName": ["image", "label", "sparse", "coo", "cluster", "pid"],
            "NumThreads": threads,
            "NumStorage": storage,
            "WorkerType": worker,
            "BatchTimeout": 60,
            "ProcessList": {
                "image": {"Producer": "sbndwire", "Downsample": 1},
                "label": {"Producer": "sbnd_cosmicseg", "Downsample": 1, "Pooling": "max", "DataType": "int64"},
                "sparse": {"Producer": "sbndwire", "MaxVoxels": MAXV, "Channels": [2, 0], "AllowEmpty": True},
                "coo": {"Producer": "sbndwire", "MaxVoxels": MAXV, "DataType": "float64"},
                "cluster": {"Producer": "sbndseg", "Channels": [1]},
                "pid": {"Producer": "sbndneutrino", "PdgClassList": PDGS, "OneHot": False, "DataType": "int32"},
            },
        }
    }


def check_batch(reader, entries, batch):
    """Compare every filler's batch with what the reader gives for the same entries."""
    assert len(batch["image"]) == len(entries)
    rows = []
    for b, e in enumerate(entries):
        e = int(e)
        np.testing.assert_allclose(batch["image"][b], dense_reference(reader, e, "sparse2d/sbndwire", downsample=1), rtol=1e-6)
        lab = dense_reference(reader, e, "sparse2d/sbnd_cosmicseg", downsample=1, pooling="max")
        np.testing.assert_array_equal(batch["label"][b], lab.astype(np.int64))
        ev = reader.read(e)
        proj = ev.products["sparse2d/sbndwire"]
        for c, pid in enumerate([2, 0]):
            sp = proj[pid]
            n = min(len(sp), MAXV)
            want = np.column_stack([sp.coords[:n], sp.values[:n]])
            np.testing.assert_array_equal(batch["sparse"][b, c, :n], want)
            assert (batch["sparse"][b, c, n:] == -999).all()
        for c, sp in enumerate(proj):
            n = min(len(sp), MAXV)
            rows.append(np.column_stack([np.full(n, b), np.full(n, c), sp.coords[:n], sp.values[:n]]))
        cl = ev.products["cluster2d/sbndseg"][1]
        want = np.full((40, 64), -1, np.int64)
        for k, voxels in enumerate(cl.clusters):
            x, y = voxels.coords.T
            want[y, x] = k
        np.testing.assert_array_equal(batch["cluster"][b, 0], want)
        assert batch["pid"][b] == PDGS.index(int(ev.products["particle/sbndneutrino"].array["pdg"][0]))
    np.testing.assert_array_equal(batch["coo"], np.concatenate(rows))


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_epoch_equals_reader_in_every_access_mode(files, mode):
    reader = open_larcv3(files)
    loader = BatchLoader(full_config(files, mode), batch_size=4)
    assert len(loader) == 4
    try:
        for epoch in range(2):
            seen = []
            for batch in loader:
                check_batch(reader, loader.last_entries, batch)
                np.testing.assert_array_equal(loader.last_event_ids, reader.event_ids[loader.last_entries])
                seen.extend(loader.last_entries.tolist())
            assert sorted(seen) == list(range(13)), "each entry exactly once per epoch"
            if mode == 0:
                assert seen == list(range(13))
            assert loader.epoch == epoch + 1
    finally:
        loader.close()


def test_larcv_verbs_and_states(files):
    proc = ThreadProcessor(full_config(files, mode=0, threads=1, storage=2))
    assert (proc.storage_status_array() == SlotState.UNKNOWN).all()
    reader = open_larcv3(files)
    try:
        assert proc.batch_process(3) is True
        assert proc.batch_process(3) is True
        assert proc.batch_process(3) is False  # both slots busy
        sid = proc.next_filled(timeout=60)
        assert proc.storage_status_array()[sid] == SlotState.FILLED
        np.testing.assert_array_equal(proc.entries(sid), [0, 1, 2])
        check_batch(reader, proc.entries(sid), proc.batch(sid))
        proc.release_data(sid)
        assert proc.storage_status_array()[sid] == SlotState.RELEASED
        with pytest.raises(ValueError, match="not FILLED"):
            proc.batch_data(sid, "image")
        proc.start_manager(3)  # now refills continuously
        got = []
        for _ in range(5):
            sid = proc.next_filled(timeout=60)
            got.extend(proc.entries(sid).tolist())
            proc.release_data(sid)
        assert got == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0, 1, 2, 3, 4]  # the stream runs on across epochs
    finally:
        proc.stop_manager()
    proc.reset()
    proc.start_manager(13)
    try:
        assert proc.entries(proc.next_filled(timeout=60)).tolist() == list(range(13))
    finally:
        proc.stop_manager()


def test_thread_workers_and_inline_fill_give_the_same_batches(files):
    reader = open_larcv3(files)
    for worker, threads in (("thread", 2), ("process", 0)):
        loader = BatchLoader(full_config(files, mode=2, threads=threads, worker=worker), batch_size=5)
        for batch in loader:
            check_batch(reader, loader.last_entries, batch)
        loader.close()


def test_batch_larger_than_dataset(files):
    loader = BatchLoader(full_config(files, mode=2, threads=1), batch_size=32)
    try:
        batches = list(loader)
        assert len(batches) == 1 and sorted(loader.last_entries.tolist()) == list(range(13))
        assert batches[0]["image"].shape[0] == 13
    finally:
        loader.close()


def test_ranks_read_disjoint_shards(files):
    seen = []
    for rank in range(2):
        loader = BatchLoader(full_config(files, mode=2, threads=1), batch_size=3, rank=rank, world_size=2, drop_last=True)
        assert len(loader) == 2
        entries = []
        for _ in loader:
            entries.extend(loader.last_entries.tolist())
        loader.close()
        seen.append(set(entries))
    assert not seen[0] & seen[1]


def test_worker_error_names_file_and_entry(files, tmp_path):
    bad = tmp_path / "bad.h5"
    shutil.copy(files[1], bad)
    with h5py.File(bad, "r+") as h5:
        g = h5["Data/sparse2d_sbndwire_group"]
        row = int(g["extents"][3]["first"])
        first = int(g["voxel_extents"][row]["first"])
        vox = g["voxels"][first]
        vox["id"] = 10**12
        g["voxels"][first] = vox
    loader = BatchLoader(full_config([files[0], bad], mode=0, threads=2), batch_size=4)
    with pytest.raises(BatchFillError) as info:
        for _ in loader:
            pass
    err = info.value
    assert str(bad) in str(err) and err.entry == 3 and err.global_entry == 10
    assert "at entry 3" in str(err)
    loader.close()


def test_numpy_views_are_released_and_copy_keeps_data(files):
    loader = BatchLoader(full_config(files, mode=0, threads=1, storage=2), batch_size=4, copy=True)
    kept = [(loader.last_entries, b) for b in loader]
    loader.close()
    reader = open_larcv3(files)
    entries = [list(range(i, min(i + 4, 13))) for i in range(0, 13, 4)]
    for e, (_, b) in zip(entries, kept):
        check_batch(reader, e, b)


def test_filler_error_names_the_entry(tmp_path):
    from loader_testdata import make_event

    from tpcflow.io import SparseProjection, write_larcv3

    rng = np.random.default_rng(0)
    events = [make_event(rng, i) for i in range(4)]
    proj = events[2].products["sparse2d/sbndwire"]
    proj[1] = SparseProjection(proj[1].meta, np.zeros(0, np.uint64), np.zeros(0, np.float32))
    path = write_larcv3(tmp_path / "empty.h5", events) or tmp_path / "empty.h5"
    cfg = {
        "ThreadProcessor": {
            "InputFiles": [str(path)],
            "ProcessType": ["BatchFillerSparseTensor2D"],
            "ProcessName": ["sparse"],
            "NumThreads": 1,
            "ProcessList": {"sparse": {"Producer": "sbndwire", "MaxVoxels": 10, "Channels": [1]}},
        }
    }
    loader = BatchLoader(cfg, batch_size=2)
    try:
        with pytest.raises(BatchFillError, match="AllowEmpty") as info:
            list(loader)
        assert info.value.entry == 2 and str(path) in str(info.value)
    finally:
        loader.close()


def test_processor_stream_with_batch_larger_than_dataset_repeats_entries(files):
    reader = open_larcv3(files)
    proc = ThreadProcessor(full_config(files, mode=0, threads=1, storage=2))
    try:
        proc.start_manager(30)
        sid = proc.next_filled(timeout=60)
        entries = proc.entries(sid)
        np.testing.assert_array_equal(entries, np.arange(30) % 13)
        check_batch(reader, entries, proc.batch(sid))
    finally:
        proc.stop_manager()


def test_augment_flips_image_and_label_together(files):
    reader = open_larcv3(files)
    cfg = full_config(files, mode=2, threads=1)
    block = cfg["MainIO"]
    block["ProcessType"], block["ProcessName"] = block["ProcessType"][:3], block["ProcessName"][:3]
    block["ProcessList"] = {k: dict(block["ProcessList"][k], Augment=True) for k in ("image", "label", "sparse")}
    loader = BatchLoader(cfg, batch_size=4)
    seen = set()
    try:
        for batch in loader:
            for b, e in enumerate(loader.last_entries):
                img = dense_reference(reader, int(e), "sparse2d/sbndwire", downsample=1)
                lab = dense_reference(reader, int(e), "sparse2d/sbnd_cosmicseg", downsample=1, pooling="max")
                # native axes (x, y) are the layout's (W, H): a native x flip mirrors the last axis
                match = [
                    (fx, fy)
                    for fx in (False, True)
                    for fy in (False, True)
                    if np.allclose(batch["image"][b], _flip(img, fx, fy), rtol=1e-6)
                    and np.array_equal(batch["label"][b], _flip(lab, fx, fy).astype(np.int64))
                ]
                assert match, f"entry {e}: image and label are not one same flip of the reader's planes"
                seen.update(match)
                sp = reader.read(int(e)).products["sparse2d/sbndwire"][2]
                n = min(len(sp), MAXV)
                x, y = sp.coords[:n].T
                fx, fy = match[0]
                want = np.column_stack([63 - x if fx else x, 39 - y if fy else y, sp.values[:n]])
                np.testing.assert_array_equal(batch["sparse"][b, 0, :n], want)
    finally:
        loader.close()
    assert len(seen) > 1, "no entry was flipped"


def _flip(planes, fx, fy):
    out = planes[:, :, ::-1] if fx else planes
    return out[:, ::-1, :] if fy else out
