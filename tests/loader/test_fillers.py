"""Batch filler math against dense numpy references (no workers)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpcflow.io import Event, EventID, ParticleSet
from tpcflow.io.larcv3.schema import PARTICLE_DTYPE
from tpcflow.loader.fillers import make_filler
from tpcflow.loader.fillers.base import PositionError
from tpcflow.loader.voxels import VoxelBatch, dense_shape, fill_coo, fill_dense, fill_padded, fill_pooled_coo


def _random_batch(rng, nv, batch, channels, max_n=60):
    parts = []
    total = int(np.prod(nv))
    for b in range(batch):
        for c in range(channels):
            n = int(rng.integers(0, max_n))
            idx = np.sort(rng.choice(total, size=n, replace=False))
            parts.append((np.full(n, b), np.full(n, c), idx, rng.uniform(-5, 50, n).astype(np.float32)))
    cat = lambda k: np.concatenate([p[k] for p in parts]).astype(np.int64 if k < 3 else np.float32)  # noqa: E731
    return VoxelBatch(cat(0), cat(1), cat(2), cat(3), nv)


def _dense_ref(vb, batch, channels, k, transpose, pooling, fill=0.0):
    d = np.full((batch, channels, *vb.number_of_voxels), fill, np.float64)
    coords = np.unravel_index(vb.index, vb.number_of_voxels)
    d[(vb.batch, vb.channel, *coords)] = vb.values
    if k:
        s = 2**k
        shape = [n // s for n in vb.number_of_voxels]
        d = d[(slice(None), slice(None), *[slice(0, n * s) for n in shape])]
        if len(shape) == 2:
            w = d.reshape(batch, channels, shape[0], s, shape[1], s)
            d = w.mean(axis=(3, 5)) if pooling == "mean" else (w.max(axis=(3, 5)) if pooling == "max" else w.sum(axis=(3, 5)))
        else:
            w = d.reshape(batch, channels, shape[0], s, shape[1], s, shape[2], s)
            d = w.mean(axis=(3, 5, 7)) if pooling == "mean" else w.max(axis=(3, 5, 7))
    if transpose:
        d = np.swapaxes(d, 2, 3) if d.ndim == 4 else d[:, :, ::-1].transpose(0, 1, 4, 3, 2)
    return d


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(0, 2),
    transpose=st.booleans(),
    pooling=st.sampled_from(["mean", "max", "sum"]),
    nv=st.sampled_from([(16, 12), (13, 8), (32, 20)]),
)
def test_fill_dense_equals_dense_pooling(seed, k, transpose, pooling, nv):
    rng = np.random.default_rng(seed)
    vb = _random_batch(rng, nv, 3, 2)
    out = np.zeros((3, 2, *dense_shape(nv, k, transpose)), np.float64)
    flat = fill_dense(out, vb, downsample=k, transpose=transpose, pooling=pooling)
    np.testing.assert_allclose(out, _dense_ref(vb, 3, 2, k, transpose, pooling), rtol=1e-6, atol=1e-5)
    # the dirty list covers every element that is not the fill value
    touched = np.zeros(out.size, bool)
    touched[flat] = True
    assert not out.reshape(-1)[~touched].any()


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(0, 3),
    transpose=st.booleans(),
    pooling=st.sampled_from(["mean", "max", "sum"]),
    nv=st.sampled_from([(16, 12), (13, 8), (32, 20), (6, 5, 9)]),
    dtype=st.sampled_from([np.float32, np.int64]),
    shuffled=st.booleans(),
)
def test_pooled_coo_rows_are_the_dense_batchs_nonzero_pixels_bit_for_bit(seed, k, transpose, pooling, nv, dtype,
                                                                        shuffled):
    """Issue 14: the sparse network's batch (pooled COO) holds exactly the non-zero pixels of the dense
    batch, with identical values (float32 sums in the same order), at every downsample and pooling."""
    rng = np.random.default_rng(seed)
    vb = _random_batch(rng, nv, 3, 2, max_n=min(200, int(np.prod(nv))))
    if dtype is np.int64:
        vb.values = np.round(np.abs(vb.values) % 3).astype(np.float32)
    if shuffled:  # file order is not pixel order: the sums must still be taken in file order
        order = rng.permutation(len(vb.index))
        vb = VoxelBatch(vb.batch[order], vb.channel[order], vb.index[order], vb.values[order], nv)
    if len(nv) == 3:
        transpose = False
    dense = np.zeros((3, 2, *dense_shape(nv, k, transpose)), dtype)
    fill_dense(dense, vb, downsample=k, transpose=transpose, pooling=pooling)
    rows = np.zeros((3 * 2 * 200, 3 + len(nv)), dtype)
    n = fill_pooled_coo(rows, vb, n_channels=2, max_voxels=200, downsample=k, transpose=transpose, pooling=pooling)
    nonzero = np.argwhere(dense != 0)
    assert n == len(nonzero)
    np.testing.assert_array_equal(rows[:n, :-1].astype(np.int64), nonzero)
    np.testing.assert_array_equal(rows[:n, -1], dense[dense != 0])  # bit for bit, not approximately


def test_pooled_coo_refuses_to_truncate_and_names_the_entry():
    vb = _random_batch(np.random.default_rng(3), (16, 12), 3, 2, max_n=60)
    filler = make_filler("image", "BatchFillerSparseCOO2D",
                         {"Producer": "wire", "MaxVoxels": 5, "Pooling": "mean", "Downsample": 1})
    filler.channels, filler.chan_of_proj, filler.number_of_voxels = [0, 1], np.array([0, 1]), (16, 12)
    counts = np.bincount(vb.batch * 2 + vb.channel, minlength=6)
    with pytest.raises(PositionError, match="more than MaxVoxels 5") as err:
        filler.fill(np.zeros((30, 5), np.float32), (vb.index, vb.values, counts.reshape(3, 2)), 3)
    assert err.value.position in range(3)
    with pytest.raises(Exception, match="Downsample and Transpose need Pooling"):
        make_filler("image", "BatchFillerSparseCOO2D", {"Producer": "wire", "MaxVoxels": 5, "Downsample": 1})


def test_fill_dense_3d_and_integer_labels():
    rng = np.random.default_rng(5)
    vb = _random_batch(rng, (8, 6, 10), 2, 1, max_n=100)
    vb.values = np.round(np.abs(vb.values) % 3).astype(np.float32)
    out = np.zeros((2, 1, 4, 3, 5), np.int64)
    fill_dense(out, vb, downsample=1, pooling="max")
    np.testing.assert_array_equal(out, _dense_ref(vb, 2, 1, 1, False, "max").astype(np.int64))
    mean_int = np.zeros((2, 1, 4, 3, 5), np.int32)
    fill_dense(mean_int, vb, downsample=1, pooling="mean")
    np.testing.assert_array_equal(mean_int, _dense_ref(vb, 2, 1, 1, False, "mean").astype(np.int32))


def test_fill_padded_layout_matches_larcv3():
    rng = np.random.default_rng(1)
    vb = _random_batch(rng, (20, 10), 2, 3, max_n=30)
    out = np.full((2, 3, 25, 3), -999.0, np.float32)
    fill_padded(out, vb)
    for b in range(2):
        for c in range(3):
            sel = (vb.batch == b) & (vb.channel == c)
            idx, val = vb.index[sel][:25], vb.values[sel][:25]
            n = len(idx)
            x, y = np.unravel_index(idx, (20, 10))
            np.testing.assert_array_equal(out[b, c, :n], np.stack([x, y, val], axis=1))
            assert (out[b, c, n:] == -999).all()


def test_fill_coo_rows():
    rng = np.random.default_rng(2)
    vb = _random_batch(rng, (20, 10), 3, 2, max_n=30)
    out = np.zeros((3 * 2 * 30, 5), np.float32)
    n = fill_coo(out, vb, n_channels=2, max_voxels=30)
    assert n == len(vb.index)
    x, y = np.unravel_index(vb.index, (20, 10))
    want = np.stack([vb.batch, vb.channel, x, y, vb.values], axis=1).astype(np.float32)
    order = np.lexsort((np.arange(n), want[:, 1], want[:, 0]))
    np.testing.assert_array_equal(out[:n], want[order])


def _particles(*pdgs):
    arr = np.zeros(len(pdgs), dtype=PARTICLE_DTYPE)
    arr["pdg"] = pdgs
    return Event(EventID(1, 0, 0), {"particle/mc": ParticleSet(arr)}, entry=0)


def test_pid_label_one_hot_index_and_multi_label():
    evs = [_particles(22, 11), _particles(2212), _particles(13, 11, 13)]
    pdgs = [11, 13, 22, 2212]
    one = make_filler("pid", "BatchFillerPIDLabel", {"ParticleProducer": "mc", "PdgClassList": pdgs})
    out = np.zeros(one.shape(3), one.dtype)
    one.fill(out, evs, 3)
    np.testing.assert_array_equal(out, [[0, 0, 1, 0], [0, 0, 0, 1], [0, 1, 0, 0]])
    idx = make_filler("pid", "BatchFillerPIDLabel", {"Producer": "mc", "PdgClassList": pdgs, "OneHot": False, "DataType": "int64"})
    out = np.zeros(idx.shape(3), idx.dtype)
    idx.fill(out, evs, 3)
    np.testing.assert_array_equal(out, [2, 3, 1])
    multi = make_filler("m", "BatchFillerMultiLabel", {"Producer": "mc", "PdgClassList": pdgs, "DataType": "uint8"})
    out = np.zeros(multi.shape(3), multi.dtype)
    multi.fill(out, evs, 3)
    np.testing.assert_array_equal(out, [[1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 0, 0]])


def test_pid_label_unknown_pdg_names_entry():
    f = make_filler("pid", "BatchFillerPIDLabel", {"Producer": "mc", "PdgClassList": [11]})
    with pytest.raises(ValueError, match="PdgClassList"):
        f.fill(np.zeros(f.shape(1), f.dtype), [_particles(13)], 1)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64", "uint8"])
def test_dtypes_selectable(dtype):
    f = make_filler("x", "BatchFillerSparseToDense2D", {"Producer": "p", "DataType": dtype})
    assert f.dtype == np.dtype(dtype)


@pytest.mark.parametrize("n_voxels", [50, 3000])  # few: dirty list; many: full clear
def test_slot_clear_restores_fill_value(n_voxels):
    import os

    from tpcflow.io import ImageMeta, ProductInfo
    from tpcflow.loader.storage import SlotLayout, SlotView, create_file

    metas = [ImageMeta(p, (256, 128), (256.0, 128.0), (0.0, 0.0)) for p in range(2)]
    f = make_filler("lab", "BatchFillerCluster2D", {"Producer": "c"})
    f.bind({"cluster2d/c": ProductInfo("cluster2d", "c", 2)}, metas)
    layout = SlotLayout([f], batch_size=2, num_storage=1)
    path, mm = create_file(layout)
    os.unlink(path)
    view = SlotView(mm, layout, 0)
    arr = view.batch("lab")
    rng = np.random.default_rng(n_voxels)
    for _ in range(3):
        view.clear("lab")
        assert (arr == -1).all()
        vb = _random_batch(rng, (256, 128), 2, 2, max_n=n_voxels)
        vb.values = np.floor(np.abs(vb.values)).astype(np.float32)
        view.record_dirty("lab", fill_dense(arr, vb, transpose=True, pooling="max"))
        assert (arr != -1).sum() > 0
    assert (int(view.arrays["_dirty_n/lab"][0]) == -1) == (n_voxels > 1000)


def test_storage_that_does_not_fit_raises_config_error():
    from tpcflow.errors import ConfigError
    from tpcflow.loader import storage

    class Huge:
        total_bytes, slot_bytes, num_storage, batch_size = 1 << 62, 1 << 60, 4, 4

    with pytest.raises(ConfigError, match="NumStorage=4"):
        storage.create_file(Huge())
