"""Tensor codec: one tensor = a small JSON header frame + raw buffer frames, sent zero-copy.

Layout of one tensor (a message may hold several, one after the other):

* frame 0, header: ``b"TPCT"`` + UTF-8 JSON ``{"v": 1, "name", "dtype" (numpy ``dtype.str``),
  "shape", "encoding" ("dense" | "coo"), "compression" (null | "lz4" | "zstd"), "sizes" (raw byte
  size of each buffer), "event_id" (null | [run, subrun, event]), "attrs" (JSON object),
  "nnz" and "index_dtype" (coo only)}``;
* dense: frame 1 is the C-order data;
* coo: frame 1 is the flat row-major voxel index (``index_dtype``, uint32 or uint64, as larcv3's
  ``np.unravel_index(index, shape)``), frame 2 the values (``dtype``).

With compression each buffer is compressed on its own (lz4 block format or a zstd frame) and
decompressed to exactly its declared size. Sparse COO keeps every element whose bit pattern is
non-zero, so ``-0.0`` and NaN payloads survive: round trips are bit-exact for every dtype.

Compressed buffers are byte-shuffled first, and a compressed COO index is delta-coded (modulo
2**bits, so exact for any order); both filters are undone on decode.

Uncompressed buffers are sent as ``memoryview`` of the array (pyzmq ``copy=False``) and decoded
with ``np.frombuffer`` over the received ``zmq.Frame`` (read-only, no copy).

Errors: malformed frames raise :class:`tpcflow.errors.ProtocolError` naming the frame and field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import lz4.block
import numpy as np
import zstandard

from tpcflow.errors import ProtocolError

__all__ = ["COMPRESSIONS", "ENCODINGS", "MAGIC", "Decoded", "decode", "decode_all", "encode", "encode_coo"]

MAGIC = b"TPCT"
ENCODINGS = ("dense", "coo")
COMPRESSIONS = (None, "lz4", "zstd")
_KINDS = "biuf"  # bool, signed, unsigned, float (float16/32/64)
_MAX_NDIM = 32
_MAX_ELEMENTS = 1 << 40
_INDEX_DTYPES = ("<u4", "<u8")


def _buffer(frame) -> memoryview:
    if isinstance(frame, (bytes, bytearray, memoryview)):
        return memoryview(frame)
    try:
        return frame.buffer  # zmq.Frame
    except AttributeError:
        return memoryview(frame)


def _raw_view(a: np.ndarray) -> memoryview:
    """Bytes of a C-contiguous array as a flat uint8 memoryview (no copy)."""
    return memoryview(a.reshape(-1).view(np.uint8))


def _check_dtype(dtype: np.dtype) -> None:
    if dtype.kind not in _KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise TypeError(f"dtype: {dtype!r} is not supported; use bool, int*, uint* or float16/32/64")


def _shuffle(a: np.ndarray) -> memoryview:
    """Byte-shuffle (all first bytes, then all second bytes, ...): floats and ints compress better."""
    if a.dtype.itemsize == 1:
        return _raw_view(a)
    return memoryview(np.ascontiguousarray(a.reshape(-1).view(np.uint8).reshape(-1, a.dtype.itemsize).T).reshape(-1))


def _unshuffle(buf, dtype: np.dtype) -> np.ndarray:
    raw = np.frombuffer(buf, np.uint8)
    if dtype.itemsize == 1:
        return raw.view(dtype)
    return np.ascontiguousarray(raw.reshape(dtype.itemsize, -1).T).reshape(-1).view(dtype)


def _compress(buf: memoryview, compression: str | None, level: int | None):
    if compression is None:
        return buf
    if compression == "lz4":
        return lz4.block.compress(buf, store_size=False, mode="fast" if level is None else "high_compression",
                                  compression=0 if level is None else level)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=3 if level is None else level).compress(buf)
    raise ValueError(f"compression: {compression!r} is not one of {COMPRESSIONS}")


def _header(name, dtype, shape, encoding, compression, sizes, event_id, attrs, **extra) -> bytes:
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding: {encoding!r} is not one of {ENCODINGS}")
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression: {compression!r} is not one of {COMPRESSIONS}")
    h = {
        "v": 1,
        "name": str(name),
        "dtype": dtype.str,
        "shape": [int(s) for s in shape],
        "encoding": encoding,
        "compression": compression,
        "sizes": sizes,
        "event_id": None if event_id is None else [int(x) for x in event_id],
        "attrs": attrs or {},
        **extra,
    }
    return MAGIC + json.dumps(h, separators=(",", ":")).encode()


def encode(
    array,
    *,
    name: str = "",
    encoding: str = "dense",
    compression: str | None = None,
    event_id=None,
    attrs: dict | None = None,
    level: int | None = None,
) -> list:
    """Encode one array as ``[header, buffers...]``.

    Parameters
    ----------
    array : array_like
        Any shape (0-d and empty included), dtype bool, int*, uint* or float16/32/64;
        non-contiguous input is copied once to C order.
    name : str
        Tensor name (e.g. ``"plane0"``).
    encoding : {"dense", "coo"}
        ``coo`` stores the flat index and value of each non-zero element (bit pattern).
    compression : {None, "lz4", "zstd"}
    event_id : (run, subrun, event), optional
    attrs : dict, optional
        JSON-serialisable extras (e.g. an ImageMeta).
    level : int, optional
        Compression level.

    Returns
    -------
    list of bytes / memoryview
        Frames for ``send_multipart(..., copy=False)``.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding: {encoding!r} is not one of {ENCODINGS}")
    a = np.asarray(array)
    if not a.flags.c_contiguous:  # np.ascontiguousarray would turn 0-d into 1-d
        a = a.copy(order="C")
    _check_dtype(a.dtype)
    if encoding == "coo":
        flat = a.reshape(-1)
        bits = flat.view(f"u{a.dtype.itemsize}") if a.dtype.itemsize in (1, 2, 4, 8) else flat
        index = np.flatnonzero(bits)
        index = index.astype(np.uint32 if a.size < (1 << 32) else np.uint64)
        return encode_coo(index, flat[index], a.shape, name=name, compression=compression,
                          event_id=event_id, attrs=attrs, level=level)
    raw = _raw_view(a) if compression is None else _shuffle(a)
    header = _header(name, a.dtype, a.shape, "dense", compression, [raw.nbytes], event_id, attrs)
    return [header, _compress(raw, compression, level)]


def encode_coo(index, values, shape, *, name: str = "", compression: str | None = None, event_id=None,
               attrs: dict | None = None, level: int | None = None) -> list:
    """Encode sparse data already in COO form (e.g. a larcv3 projection) without densifying.

    Parameters
    ----------
    index : (N,) unsigned ints
        Flat row-major indices into ``shape`` (larcv3 voxel index); sent as uint32 when they fit.
    values : (N,) array
    shape : tuple of int
        Dense shape (larcv3 ``meta.number_of_voxels``).

    Raises
    ------
    ValueError
        If ``index`` and ``values`` differ in length or an index is outside ``shape``.
    """
    values = np.ascontiguousarray(values).reshape(-1)
    _check_dtype(values.dtype)
    index = np.asarray(index).reshape(-1)
    if index.shape != values.shape:
        raise ValueError(f"index has {index.size} entries but values has {values.size}")
    total = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    if index.size and (index.min() < 0 or int(index.max()) >= total):
        raise ValueError(f"index: values must lie in [0, {total}) for shape {tuple(shape)}")
    index = np.ascontiguousarray(index, dtype="<u4" if total <= (1 << 32) else "<u8")
    if compression is None:
        iv, vv = _raw_view(index), _raw_view(values)
    else:  # delta (modulo 2**bits, exact for any order) + byte shuffle before compression
        delta = np.diff(index, prepend=index.dtype.type(0)) if index.size else index
        iv, vv = _shuffle(delta), _shuffle(values)
    header = _header(name, values.dtype, shape, "coo", compression, [iv.nbytes, vv.nbytes], event_id, attrs,
                     nnz=int(index.size), index_dtype=index.dtype.str)
    return [header, _compress(iv, compression, level), _compress(vv, compression, level)]


@dataclass
class Decoded:
    """One decoded tensor.

    Attributes
    ----------
    name, dtype, shape, encoding, compression, event_id, attrs
        From the header (``event_id`` is a tuple or None).
    data : ndarray or None
        Dense: the array (read-only view of the received frame when uncompressed).
    index, values : ndarray or None
        COO: flat index (uint32/uint64) and values, each of length ``nnz``.
    """

    name: str
    dtype: np.dtype
    shape: tuple
    encoding: str
    compression: str | None
    event_id: tuple | None
    attrs: dict = field(default_factory=dict)
    data: np.ndarray | None = None
    index: np.ndarray | None = None
    values: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        """The dense array (COO is scattered into zeros)."""
        if self.encoding == "dense":
            return self.data
        out = np.zeros(self.shape, dtype=self.dtype)
        out.reshape(-1)[self.index.astype(np.intp)] = self.values
        return out


def _fail(where: str, what: str):
    raise ProtocolError(f"tensor codec: {what} ({where})")


def _take(buf: memoryview, compression, size: int, where: str) -> memoryview:
    if compression is None:
        if buf.nbytes != size:
            _fail(where, f"buffer has {buf.nbytes} bytes, header says {size}")
        return buf
    try:
        if compression == "lz4":
            out = lz4.block.decompress(buf, uncompressed_size=size) if size else b""
        else:
            out = zstandard.ZstdDecompressor().decompress(buf, max_output_size=size) if size else b""
    except (lz4.block.LZ4BlockError, zstandard.ZstdError, ValueError) as err:
        _fail(where, f"{compression} data does not decompress: {err}")
    if len(out) != size:
        _fail(where, f"decompressed to {len(out)} bytes, header says {size}")
    return memoryview(out)


def _parse_header(frame, where: str) -> dict:
    raw = bytes(_buffer(frame)[:65536 + 4])
    if not raw.startswith(MAGIC):
        _fail(where, f"header does not start with {MAGIC!r}")
    try:
        h = json.loads(raw[len(MAGIC):])
    except (UnicodeDecodeError, ValueError) as err:
        _fail(where, f"header is not JSON: {err}")
    if not isinstance(h, dict) or h.get("v") != 1:
        _fail(where, "header must be a JSON object with v=1")
    try:
        dtype = np.dtype(h["dtype"])
        _check_dtype(dtype)
    except (KeyError, TypeError) as err:
        _fail(where, f"field 'dtype': {h.get('dtype')!r} is not supported ({err})")
    shape = h.get("shape")
    if (not isinstance(shape, list) or len(shape) > _MAX_NDIM
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
        _fail(where, f"field 'shape': {shape!r} must be a list of at most {_MAX_NDIM} non-negative ints")
    total = 1
    for s in shape:
        total *= s
    if total > _MAX_ELEMENTS:
        _fail(where, f"field 'shape': {shape} has more than 2**40 elements")
    enc, comp = h.get("encoding"), h.get("compression")
    if enc not in ENCODINGS:
        _fail(where, f"field 'encoding': {enc!r} is not one of {ENCODINGS}")
    if comp not in COMPRESSIONS:
        _fail(where, f"field 'compression': {comp!r} is not one of {COMPRESSIONS}")
    sizes = h.get("sizes")
    nbuf = 1 if enc == "dense" else 2
    if not isinstance(sizes, list) or len(sizes) != nbuf or not all(isinstance(s, int) and s >= 0 for s in sizes):
        _fail(where, f"field 'sizes': {sizes!r} must list {nbuf} byte sizes")
    eid = h.get("event_id")
    if eid is not None and (not isinstance(eid, list) or len(eid) != 3 or not all(isinstance(x, int) for x in eid)):
        _fail(where, f"field 'event_id': {eid!r} must be null or [run, subrun, event]")
    if not isinstance(h.get("attrs", {}), dict) or not isinstance(h.get("name", ""), str):
        _fail(where, "fields 'name' / 'attrs' must be a string / an object")
    h["_dtype"], h["_total"], h["_nbuf"] = dtype, total, nbuf
    return h


def decode(frames: list, start: int = 0) -> tuple[Decoded, int]:
    """Decode the tensor whose header is ``frames[start]``; return it and the next frame index.

    Raises
    ------
    ProtocolError
        If a frame is missing, the header is invalid, a size disagrees with the header, an index
        is out of range, or compressed data is corrupt.
    """
    where = f"frame {start}"
    if start >= len(frames):
        _fail(where, f"expected a header frame but the message has {len(frames)} frames")
    h = _parse_header(frames[start], where)
    dtype, shape, total, nbuf = h["_dtype"], tuple(h["shape"]), h["_total"], h["_nbuf"]
    if start + nbuf > len(frames) - 1:
        _fail(where, f"encoding {h['encoding']!r} needs {nbuf} buffer frames after the header")
    sizes, comp = h["sizes"], h["compression"]
    out = Decoded(h.get("name", ""), dtype, shape, h["encoding"], comp,
                  None if h.get("event_id") is None else tuple(h["event_id"]), h.get("attrs", {}))
    if h["encoding"] == "dense":
        if sizes[0] != total * dtype.itemsize:
            _fail(where, f"dense size {sizes[0]} != {total} elements x {dtype.itemsize} bytes")
        buf = _take(_buffer(frames[start + 1]), comp, sizes[0], f"frame {start + 1}")
        arr = np.frombuffer(buf, dtype=dtype) if comp is None else _unshuffle(buf, dtype)
        out.data = arr.reshape(shape)
        return out, start + 2
    nnz, idt = h.get("nnz"), h.get("index_dtype")
    if not isinstance(nnz, int) or nnz < 0 or nnz > total or idt not in _INDEX_DTYPES:
        _fail(where, f"fields 'nnz' / 'index_dtype': {nnz!r} / {idt!r} are invalid for {total} elements")
    idt = np.dtype(idt)
    if sizes[0] != nnz * idt.itemsize or sizes[1] != nnz * dtype.itemsize:
        _fail(where, f"coo sizes {sizes} do not match nnz={nnz}")
    ibuf = _take(_buffer(frames[start + 1]), comp, sizes[0], f"frame {start + 1}")
    vbuf = _take(_buffer(frames[start + 2]), comp, sizes[1], f"frame {start + 2}")
    if comp is None:
        index, values = np.frombuffer(ibuf, dtype=idt), np.frombuffer(vbuf, dtype=dtype)
    else:
        index = np.cumsum(_unshuffle(ibuf, idt), dtype=idt)
        values = _unshuffle(vbuf, dtype)
    if nnz and int(index.max()) >= total:
        _fail(f"frame {start + 1}", f"index {int(index.max())} is outside shape {list(shape)}")
    out.index, out.values = index, values
    return out, start + 3


def decode_all(frames: list, start: int = 0) -> list[Decoded]:
    """Decode every tensor in ``frames[start:]`` (a message of consecutive tensors)."""
    out = []
    i = start
    while i < len(frames):
        t, i = decode(frames, i)
        out.append(t)
    return out
