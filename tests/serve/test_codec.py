"""Tensor codec: exact round trips (hypothesis), zero-copy decode, and malformed frames."""

from __future__ import annotations

import json

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tpcflow.errors import ProtocolError
from tpcflow.serve import codec

DTYPES = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
          np.float16, np.float32, np.float64]


def bits(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.view(f"u{a.dtype.itemsize}") if a.dtype.itemsize in (1, 2, 4, 8) else a


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7))
    # sparse-ish content: mostly zeros, and any bit pattern (NaN, -0.0, inf) elsewhere
    a = draw(hnp.arrays(dtype, shape, elements=hnp.from_dtype(dtype, allow_nan=True) if dtype.kind == "f" else None,
                        fill=st.just(dtype.type(0))))
    view = draw(st.sampled_from(["c", "step", "transpose"]))
    if view == "step" and a.ndim:
        a = a[::2]
    elif view == "transpose" and a.ndim > 1:
        a = a.T
    return a


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=arrays(), encoding=st.sampled_from(codec.ENCODINGS), compression=st.sampled_from(codec.COMPRESSIONS),
       eid=st.none() | st.tuples(st.integers(-1, 2**40), st.integers(-1, 9), st.integers(0, 2**40)))
def test_round_trip_is_bit_exact(a, encoding, compression, eid):
    frames = codec.encode(a, name="t", encoding=encoding, compression=compression, event_id=eid, attrs={"k": [1, 2]})
    # as the receiver sees them: separate byte strings
    out, nxt = codec.decode([bytes(f) for f in frames])
    assert nxt == len(frames)
    assert out.name == "t" and out.attrs == {"k": [1, 2]} and out.event_id == eid
    back = out.array
    assert back.dtype == a.dtype and back.shape == a.shape
    np.testing.assert_array_equal(bits(back), bits(a))


def test_dense_uncompressed_is_zero_copy_both_ways():
    a = np.arange(1000, dtype=np.float32)
    header, buf = codec.encode(a)
    assert isinstance(buf, memoryview) and np.shares_memory(np.frombuffer(buf, np.float32), a)
    received = bytearray(buf)
    out, _ = codec.decode([header, received])
    assert np.shares_memory(out.data, np.frombuffer(received, np.float32))


def test_several_tensors_in_one_message():
    frames = codec.encode(np.ones(3, np.int8), name="a") + codec.encode(np.eye(3), name="b", encoding="coo",
                                                                         compression="zstd")
    ts = codec.decode_all(frames)
    assert [t.name for t in ts] == ["a", "b"]
    np.testing.assert_array_equal(ts[1].array, np.eye(3))
    assert ts[1].nnz if hasattr(ts[1], "nnz") else len(ts[1].index) == 3


def test_real_event_sparse_compressed_is_20x_smaller(shared_data):
    from tpcflow.io import open_larcv3

    r = open_larcv3(shared_data("larcv3/cosmic_tagging_light.h5"), products=["sparse2d/sbndwire"])
    planes = r.read(0).products["sparse2d/sbndwire"]
    dense = sum(p.meta.total_voxels * 4 for p in planes)
    sizes = {}
    for comp in (None, "lz4", "zstd"):
        frames = []
        for p in planes:
            frames += codec.encode_coo(p.index, p.values, p.meta.number_of_voxels, compression=comp)
        sizes[comp] = sum(len(memoryview(f)) for f in frames)
        back = codec.decode_all([bytes(f) for f in frames])
        for p, t in zip(planes, back):
            np.testing.assert_array_equal(t.index, p.index)
            np.testing.assert_array_equal(t.values, p.values)
    assert dense / sizes["zstd"] >= 20, sizes
    assert sizes["zstd"] < sizes[None] and sizes["lz4"] < sizes[None]


def test_encode_rejects_unsupported_input():
    with pytest.raises(TypeError, match="dtype"):
        codec.encode(np.array(["a"], dtype=object))
    with pytest.raises(ValueError, match="encoding"):
        codec.encode(np.ones(2), encoding="csr")
    with pytest.raises(ValueError, match="index"):
        codec.encode_coo(np.array([5]), np.array([1.0]), (2, 2))


def _header(**over):
    h = {"v": 1, "name": "", "dtype": "<f4", "shape": [2], "encoding": "dense", "compression": None, "sizes": [8],
         "event_id": None, "attrs": {}}
    h.update(over)
    return codec.MAGIC + json.dumps(h).encode()


@pytest.mark.parametrize(
    "frames, match",
    [
        ([], "header frame"),
        ([b"XXXX{}", b""], "does not start"),
        ([codec.MAGIC + b"{not json", b""], "not JSON"),
        ([_header(dtype="|O")], "dtype"),
        ([_header(shape=[-1])], "shape"),
        ([_header(shape=[2**21, 2**21])], "2\\*\\*40"),
        ([_header(encoding="csr"), b""], "encoding"),
        ([_header()], "buffer frames"),
        ([_header(), b"\0" * 7], "7 bytes"),
        ([_header(sizes=[4]), b"\0" * 4], "dense size"),
        ([_header(compression="lz4"), b"\xff" * 5], "decompress"),
        ([_header(compression="zstd"), b"garbage"], "decompress"),
        ([_header(encoding="coo", nnz=1, index_dtype="<u4", sizes=[4, 4]), np.array([7], "<u4").tobytes(),
          b"\0" * 4], "outside shape"),
        ([_header(encoding="coo", nnz=3, index_dtype="<u4", sizes=[12, 12]), b"", b""], "nnz"),
        ([_header(event_id=[1, 2]), b"\0" * 8], "event_id"),
    ],
)
def test_malformed_frames_raise_protocol_error(frames, match):
    with pytest.raises(ProtocolError, match=match):
        codec.decode(frames)


@settings(max_examples=50, deadline=None)
@given(frames=st.lists(st.binary(max_size=64), max_size=4), mutate=st.integers(0, 200))
def test_random_or_corrupted_frames_only_raise_protocol_error(frames, mutate):
    good = [bytes(f) for f in codec.encode(np.arange(6, dtype=np.int16).reshape(2, 3), encoding="coo",
                                           compression="lz4")]
    corrupted = list(good)
    i = mutate % len(good)
    b = bytearray(corrupted[i])
    if b:
        b[mutate % len(b)] ^= 0xFF
    corrupted[i] = bytes(b)
    for candidate in (frames, corrupted, good[:mutate % 3] + frames):
        try:
            codec.decode_all(candidate)
        except ProtocolError:
            pass
