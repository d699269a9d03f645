"""ImageMeta's one plain-dict form: exact round trip, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tpcflow.errors import DataFormatError
from tpcflow.io.products import ImageMeta

_floats = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def metas(draw):
    ndim = draw(st.sampled_from([2, 3]))
    return ImageMeta(
        projection_id=draw(st.integers(0, 2**31 - 1)),
        number_of_voxels=tuple(draw(st.lists(st.integers(1, 2**20), min_size=ndim, max_size=ndim))),
        image_sizes=tuple(draw(st.lists(_floats, min_size=ndim, max_size=ndim))),
        origin=tuple(draw(st.lists(_floats, min_size=ndim, max_size=ndim))),
        valid=draw(st.booleans()),
    )


@given(metas())
def test_dict_round_trip_through_json_is_exact(meta):
    assert ImageMeta.from_dict(json.loads(json.dumps(meta.to_dict()))) == meta


def test_bad_dicts_are_clear_errors():
    good = ImageMeta(1, (2048, 1280), (2048.0, 1280.0), (0.0, 0.0)).to_dict()
    with pytest.raises(DataFormatError, match="not an ImageMeta dict.*origin"):
        ImageMeta.from_dict({k: v for k, v in good.items() if k != "origin"})
    with pytest.raises(DataFormatError, match="axes disagree"):
        ImageMeta.from_dict(dict(good, origin=[0.0, 0.0, 0.0]))
    assert ImageMeta.from_dict({k: v for k, v in good.items() if k != "valid"}).valid is True


@given(st.integers(1, 40), st.integers(1, 40), st.data())
def test_cosmic_tagger_layout_is_the_transpose_of_the_native_plane(w_n, h_n, data):
    from tpcflow.io.products import SparseProjection, image_coordinates, image_index, image_shape

    nv = (w_n, h_n)  # larcv3 number_of_voxels of a 2D projection
    index = np.unique(np.asarray(data.draw(st.lists(st.integers(0, w_n * h_n - 1), max_size=30)), np.uint64))
    values = np.arange(1, index.size + 1, dtype=np.float32)
    proj = SparseProjection(ImageMeta(0, nv, (float(w_n), float(h_n)), (0.0, 0.0)), index, values)
    assert image_shape(nv) == (h_n, w_n)
    image = np.zeros(image_shape(nv), np.float32)
    h, w = image_coordinates(index, nv)
    image[h, w] = values
    np.testing.assert_array_equal(image, proj.to_dense().T)  # image[h, w] = dense[w, h]
    np.testing.assert_array_equal(image_index(h, w, nv), index)


@given(st.integers(1, 12), st.integers(1, 12), st.data())
def test_dense_image_to_sparse_inverts_to_dense(rows, cols, data):
    from tpcflow.io.products import DenseImage

    values = data.draw(st.lists(st.sampled_from([0.0, 0.0, -1.5, 2.0, 7.25]), min_size=rows * cols,
                                max_size=rows * cols))
    image = DenseImage(ImageMeta(0, (rows, cols), (float(rows), float(cols)), (0.0, 0.0)),
                       np.asarray(values, np.float32).reshape(rows, cols))
    sparse = image.to_sparse()
    assert sparse.index.dtype == np.uint64 and sparse.values.dtype == np.float32
    assert np.all(sparse.values != 0) and np.all(np.diff(sparse.index.astype(np.int64)) > 0)
    np.testing.assert_array_equal(sparse.to_dense(), image.data)
