"""BatchLoader: torch tensors, CosmicTagger config on a generated SBND file, epochs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from loader_testdata import dense_reference

from tpcflow.errors import ConfigError
from tpcflow.io import open_larcv3
from tpcflow.loader import BatchLoader, cosmic_tagger_config
from tpcflow.sim.sbnd import generate_file


@pytest.fixture(scope="module")
def sbnd(tmp_path_factory):
    return generate_file(tmp_path_factory.mktemp("sbnd") / "sbnd.h5", 6, seed=5, downsample=2)


def test_cosmic_tagger_batches_as_torch(sbnd):
    reader = open_larcv3(sbnd)
    nv = reader.read(0).products["sparse2d/sbndwire"][0].meta.number_of_voxels
    loader = BatchLoader(cosmic_tagger_config([sbnd], downsample=1, num_threads=2), batch_size=4, to_torch=True, pin_memory=True)
    try:
        batches = 0
        for batch in loader:
            img, lab = batch["image"], batch["label"]
            assert img.dtype == torch.float32 and lab.dtype == torch.int64
            assert img.shape[1:] == (3, nv[1] // 2, nv[0] // 2)
            for b, e in enumerate(loader.last_entries):
                ref = dense_reference(reader, int(e), "sparse2d/sbndwire", downsample=1)
                np.testing.assert_allclose(img[b].numpy(), ref, rtol=1e-5, atol=1e-5)
                ref = dense_reference(reader, int(e), "sparse2d/sbnd_cosmicseg", downsample=1, pooling="max")
                assert torch.equal(lab[b], torch.from_numpy(ref.astype(np.int64)))
                assert set(torch.unique(lab[b]).tolist()) <= {0, 1, 2}
            batches += 1
        assert batches == len(loader) == 2
        assert img.is_pinned() == torch.cuda.is_available()
    finally:
        loader.close()


def test_break_then_iterate_restarts_the_epoch(sbnd):
    loader = BatchLoader(cosmic_tagger_config([sbnd], num_threads=1, random_access=0), batch_size=2)
    try:
        for _ in loader:
            break
        assert loader.epoch == 0
        seen = [loader.last_entries.tolist() for _ in loader]
        assert seen == [[0, 1], [2, 3], [4, 5]]
        loader.set_epoch(5)
        list(loader)
        assert loader.epoch == 6
        loader.set_epoch(2, start_batch=1)  # resume mid-epoch without reading the skipped batch
        assert [loader.last_entries.tolist() for _ in loader] == [[2, 3], [4, 5]]
        assert loader.epoch == 3
    finally:
        loader.close()


def test_pin_memory_needs_torch(sbnd):
    with pytest.raises(ConfigError, match="to_torch"):
        BatchLoader(cosmic_tagger_config([sbnd], num_threads=1), batch_size=2, pin_memory=True)


def test_set_epoch_each_epoch_keeps_the_prefetch(sbnd):
    loader = BatchLoader(cosmic_tagger_config([sbnd], num_threads=1, random_access=2), batch_size=2)
    try:
        orders = []
        for epoch in range(3):
            loader.set_epoch(epoch)  # the DistributedSampler idiom
            rt = loader.processor._rt
            orders.append([e for _ in loader for e in loader.last_entries.tolist()])
            if epoch:
                assert loader.processor._rt is rt and rt.gen == gen, "prefetched batches were discarded"
            gen = loader.processor._rt.gen
        assert all(sorted(o) == list(range(6)) for o in orders) and orders[0] != orders[1]
    finally:
        loader.close()
