"""Direct chunk reads give the same arrays with libdeflate and with the zlib fallback,
and a corrupt chunk is a DataFormatError naming the file under both."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import data_path

from tpcflow.errors import DataFormatError
from tpcflow.io import open_larcv3
from tpcflow.io.larcv3 import _chunks

KEY = "sparse2d/sbndwire"


def _read_all(path):
    with open_larcv3(path) as r:
        blk = r.read_sparse_block(KEY, 0, len(r))
        return blk.index.copy(), blk.values.copy(), blk.counts.copy()


@pytest.fixture(params=["libdeflate", "zlib"])
def inflater(request, monkeypatch):
    if request.param == "zlib":
        monkeypatch.setattr(_chunks, "_libdeflate", None)
    elif _chunks._libdeflate is None:
        pytest.skip("the deflate package (libdeflate) is not installed")
    return request.param


def test_same_arrays_as_h5py(inflater):
    import h5py

    path = data_path("larcv3/cosmic_tagging_light.h5")
    index, values, counts = _read_all(path)
    with h5py.File(path, "r") as f:
        raw = f["Data/sparse2d_sbndwire_group/voxels"][:]
    np.testing.assert_array_equal(index, raw["id"])
    np.testing.assert_array_equal(values, raw["value"])
    assert int(counts.sum()) == 276_764


def test_corrupt_chunk_is_a_clear_error(inflater, tmp_path):
    import h5py

    src = data_path("larcv3/cosmic_tagging_light.h5")
    path = tmp_path / "corrupt.h5"
    shutil.copy(src, path)
    with h5py.File(path, "r") as f:
        info = f["Data/sparse2d_sbndwire_group/voxels"].id.get_chunk_info(3)
    with open(path, "r+b") as fh:  # overwrite the middle of chunk 3's compressed bytes
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(b"\xff" * 64)
    with open_larcv3(path) as r, pytest.raises(DataFormatError, match="corrupt.h5"):
        r.read_sparse_block(KEY, 0, len(r))
