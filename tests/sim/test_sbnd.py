"""Synthetic SBND-like events: determinism, product layout, pooling, geometry, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tpcflow.io import Larcv3Reader
from tpcflow.io.products import EventID
from tpcflow.sim import geometry as geo
from tpcflow.sim.sbnd import generate_event, generate_events, generate_file

CHARGE = "sparse2d/sbndwire"
LABEL = "sparse2d/sbnd_cosmicseg"


def products_equal(a, b) -> bool:
    if set(a.products) != set(b.products):
        return False
    for key in a.products:
        for pa, pb in zip(a.products[key], b.products[key]):
            if pa.meta != pb.meta or not np.array_equal(pa.index, pb.index) or not np.array_equal(pa.values, pb.values):
                return False
    return True


@pytest.fixture(scope="module")
def full_event():
    return generate_event(np.random.default_rng(2024))


def test_same_seed_same_events_and_event_independent_of_count():
    a = list(generate_events(2, seed=11, downsample=2))
    b = list(generate_events(3, seed=11, downsample=2))
    assert all(products_equal(x, y) for x, y in zip(a, b))
    assert [e.event_id for e in b] == [EventID(1, 0, i) for i in range(3)]
    c = next(generate_events(1, seed=12, downsample=2))
    assert not products_equal(a[0], c)
    assert not products_equal(b[0], b[1])


def test_events_do_not_depend_on_the_worker_processes(tmp_path):
    serial = list(generate_events(10, seed=11, downsample=3, workers=1))
    parallel = list(generate_events(10, seed=11, downsample=3, workers=2))
    assert [e.event_id for e in parallel] == [EventID(1, 0, i) for i in range(10)]
    assert all(products_equal(x, y) for x, y in zip(serial, parallel))
    early = generate_events(50, seed=11, downsample=3, workers=2)  # a consumer that stops early
    assert products_equal(next(early), serial[0])
    early.close()  # cancels the queued events and joins the workers: returns, no hang
    files = [generate_file(tmp_path / f"w{w}.h5", 6, seed=4, downsample=3, workers=w) for w in (1, 2)]
    with Larcv3Reader(files[0]) as a, Larcv3Reader(files[1]) as b:
        assert len(a) == len(b) == 6
        assert all(products_equal(a.read(i), b.read(i)) for i in range(6))


def test_products_layout(full_event):
    charge, label = full_event.products[CHARGE], full_event.products[LABEL]
    assert len(charge) == len(label) == 3
    for p, (c, lb) in enumerate(zip(charge, label)):
        assert c.meta.projection_id == p
        assert c.meta.number_of_voxels == (2048, 1280)
        assert c.meta.image_sizes == (2048.0, 1280.0) and c.meta.origin == (0.0, 0.0)
        assert c.index.dtype == np.uint64 and c.values.dtype == np.float32 and lb.values.dtype == np.float32
        np.testing.assert_array_equal(c.index, lb.index)
        assert np.all(np.diff(c.index.astype(np.int64)) > 0), "voxel ids must be sorted and unique"
        assert int(c.index.max()) < 2048 * 1280
        assert c.values.min() >= 5.0, "zero suppression at 5 ADC"
        assert set(np.unique(lb.values).tolist()) == {0.0, 1.0, 2.0}
        wires = c.coords[:, 0]
        lo, hi = geo.ACTIVE_WIRES[p]
        assert wires.min() >= lo and wires.max() < hi


def test_planes_are_views_of_one_event(full_event):
    """The drift coordinate is shared: the neutrino's charge lies at the same ticks on all three planes.

    Charge-weighted deciles of the neutrino voxels' ticks (plain percentiles would follow the
    faint blips, which fall partly outside one plane's active wires).
    """
    deciles = []
    for c, lb in zip(full_event.products[CHARGE], full_event.products[LABEL]):
        nu = lb.values == 2
        order = np.argsort(c.coords[nu, 1])
        cum = np.cumsum(c.values[nu][order]) / c.values[nu].sum()
        deciles.append(c.coords[nu, 1][order][np.searchsorted(cum, [0.1, 0.5, 0.9])])
    assert np.ptp(np.array(deciles), axis=0).max() <= 8, deciles


@pytest.mark.parametrize("k", [1, 3])
def test_downsample_pools_the_full_resolution_event(k):
    full = generate_event(np.random.default_rng(7))
    coarse = generate_event(np.random.default_rng(7), downsample=k)
    for p in range(3):
        fc, fl = full.products[CHARGE][p], full.products[LABEL][p]
        cc, cl = coarse.products[CHARGE][p], coarse.products[LABEL][p]
        assert cc.meta.number_of_voxels == (2048 >> k, 1280 >> k)
        np.testing.assert_array_equal(cc.index, cl.index)
        w, t = fc.coords.T
        cid = (w >> k) * (1280 >> k) + (t >> k)
        np.testing.assert_array_equal(cc.index, np.unique(cid).astype(np.uint64))
        # average pooling: block sum / 4**k; max pooling of labels
        np.testing.assert_allclose(cc.values.sum(dtype=np.float64) * 4**k, fc.values.sum(dtype=np.float64), rtol=1e-5)
        lab = np.zeros(cc.index.shape[0])
        np.maximum.at(lab, np.searchsorted(cc.index.astype(np.int64), cid), fl.values)
        np.testing.assert_array_equal(cl.values, lab)


def test_bad_arguments():
    with pytest.raises(ValueError, match="downsample"):
        generate_event(np.random.default_rng(0), downsample=-1)
    with pytest.raises(ValueError, match="n must be"):
        list(generate_events(-1, 0))
    with pytest.raises(ValueError, match="workers must be"):
        list(generate_events(2, 0, workers=0))


def test_full_resolution_event_is_fast():
    rng = np.random.default_rng(5)
    generate_event(rng)  # warm-up
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        generate_event(rng)
        best = min(best, time.perf_counter() - t0)
    assert best < 0.5, f"{best:.3f} s per full-resolution event"
