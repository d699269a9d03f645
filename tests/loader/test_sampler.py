"""Entry order: each entry once per epoch, disjoint shards, torch DistributedSampler semantics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from tpcflow.errors import ConfigError
from tpcflow.loader.sampler import EntrySampler


@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("n, bs", [(23, 4), (8, 8), (5, 16)])
def test_each_entry_once_per_epoch(mode, n, bs):
    s = EntrySampler(n, bs, mode=mode, seed=3)
    for epoch in range(3):
        got = np.concatenate(s.batches(epoch))
        assert sorted(got.tolist()) == list(range(n))
        assert len(s.batches(epoch)) == len(s)
    if mode == 0:
        assert np.concatenate(s.batches(0)).tolist() == list(range(n))


def test_random_events_reshuffle_per_epoch_and_repeat_per_seed():
    a, b = EntrySampler(50, 5, mode=2, seed=1), EntrySampler(50, 5, mode=2, seed=1)
    assert np.array_equal(a.entries(0), b.entries(0))
    assert not np.array_equal(a.entries(0), a.entries(1))


def test_random_blocks_are_contiguous():
    s = EntrySampler(40, 8, mode=1, seed=0)
    for batch in s.batches(0):
        assert (np.diff(batch) == 1).all()
    assert not np.array_equal(s.entries(0), np.arange(40))


@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("n, world", [(20, 4), (23, 3), (5, 8)])
def test_shards_disjoint_and_equal(mode, n, world):
    shards = [EntrySampler(n, 3, mode=mode, seed=9, rank=r, world_size=world).entries(2) for r in range(world)]
    assert len({len(s) for s in shards}) == 1
    allv = np.concatenate(shards)
    assert set(allv.tolist()) == set(range(n))
    if n % world == 0:  # no padding: disjoint
        assert len(set(allv.tolist())) == len(allv)
    else:  # padding repeats only the head of the order
        assert len(allv) - len(set(allv.tolist())) == len(allv) - n


@pytest.mark.parametrize("n, world, drop_last", [(23, 3, False), (23, 3, True), (5, 8, False)])
def test_sequential_matches_torch_distributed_sampler(n, world, drop_last):
    for r in range(world):
        ours = EntrySampler(n, 2, mode=0, rank=r, world_size=world, drop_last=drop_last).entries(0)
        theirs = list(DistributedSampler(torch.arange(n), num_replicas=world, rank=r, shuffle=False, drop_last=drop_last))
        assert ours.tolist() == theirs


def test_batch_larger_than_dataset():
    s = EntrySampler(5, 16, mode=2)
    assert len(s) == 1 and len(s.batches(0)[0]) == 5
    stream = s.stream()
    first = [next(stream)[2] for _ in range(3)]
    assert all(len(b) == 16 for b in first)
    with pytest.raises(ConfigError, match="larger than"):
        EntrySampler(5, 16, drop_last=True)


def test_bad_rank():
    with pytest.raises(ConfigError, match="rank"):
        EntrySampler(5, 1, rank=2, world_size=2)
