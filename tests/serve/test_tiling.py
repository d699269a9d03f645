"""Tiling whole planes for fixed-size networks (issue 12): exact where tiles do not overlap."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path
from hypothesis import given, settings
from hypothesis import strategies as st

from tpcflow.serve.tiling import apply_tiled, crop, stitch, tile_grid


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 60), w=st.integers(1, 60), th=st.integers(1, 20), tw=st.integers(1, 20),
       oh=st.integers(0, 19), ow=st.integers(0, 19), mode=st.sampled_from(["overwrite", "mean", "max"]))
def test_tiles_cover_the_plane_and_round_trip(h, w, th, tw, oh, ow, mode):
    oh, ow = min(oh, th - 1), min(ow, tw - 1)
    plane = np.random.default_rng(h * 61 + w).random((2, h, w)).astype(np.float32)
    tiles = tile_grid((h, w), (th, tw), (oh, ow))
    covered = np.zeros((h, w), int)
    for t in tiles:
        assert 0 <= t.row and t.row + t.rows <= h and 0 <= t.col and t.col + t.cols <= w
        covered[t.row : t.row + t.rows, t.col : t.col + t.cols] += 1
    assert (covered >= 1).all()
    parts = crop(plane, tiles, (th, tw))
    assert parts.shape == (len(tiles), 2, th, tw)
    np.testing.assert_array_equal(stitch(parts, tiles, (h, w), mode), plane)


def _pointwise(batch):  # a "network" whose output at a pixel depends on that pixel only: [n, P, h, w] -> [n, 2, P, h, w]
    return np.stack([batch * 2.0 + 1.0, -batch], axis=1)


def _conv(batch):  # neighbours matter: a 3x3 box sum along the last two axes (zero outside the tile)
    p = np.pad(batch, [(0, 0)] * (batch.ndim - 2) + [(1, 1), (1, 1)])
    return sum(p[..., i : i + batch.shape[-2], j : j + batch.shape[-1]] for i in range(3) for j in range(3))


def test_tiled_network_equals_whole_plane_network_where_tiles_do_not_overlap():
    rng = np.random.default_rng(0)
    plane = rng.random((3, 70, 90)).astype(np.float32)
    whole = _pointwise(plane[None])[0]
    for mode in ("overwrite", "mean", "max"):  # a pointwise network: exact everywhere, overlaps included
        np.testing.assert_array_equal(apply_tiled(_pointwise, plane, (32, 40), (6, 8), mode, batch=3), whole)
    # a network with context: exact away from tile borders, where each pixel sees all its neighbours
    tiles = tile_grid((70, 90), (32, 40))
    got, want = apply_tiled(_conv, plane, (32, 40)), _conv(plane[None])[0]
    inner = np.zeros((70, 90), bool)  # away from the border of the tile whose output is kept (the last)
    for t in tiles:
        inner[t.row : t.row + t.rows, t.col : t.col + t.cols] = False
        inner[t.row + 1 : t.row + t.rows - 1, t.col + 1 : t.col + t.cols - 1] = True
    np.testing.assert_allclose(got[:, inner], want[:, inner], rtol=1e-6)
    assert not np.allclose(got[:, ~inner], want[:, ~inner])  # and not at the borders: context is lost there


def test_microboone_planes_with_ubsplitdetector_tiles():
    """The real 1008x3456 MicroBooNE wire planes through 512x832 tiles."""
    from tpcflow.io.larcv_root import iterate_image2d

    (entry,) = list(iterate_image2d(data_path("larcv1/out_larcv_test.root"), "wire"))
    plane = np.stack(entry.images)
    tiles = tile_grid(plane.shape[-2:], (512, 832), (16, 32))
    assert len(tiles) == 2 * 5 and all((t.rows, t.cols) == (512, 832) for t in tiles)
    out = apply_tiled(_pointwise, plane, (512, 832), (16, 32), "mean", batch=4)
    np.testing.assert_array_equal(out, _pointwise(plane[None])[0])
    assert out.shape == (2, 3, 1008, 3456)


def test_bad_arguments():
    with pytest.raises(ValueError, match="overlap"):
        tile_grid((10, 10), (4, 4), (4, 0))
    with pytest.raises(ValueError, match="positive"):
        tile_grid((0, 10), (4, 4))
    tiles = tile_grid((10, 10), (4, 4))
    with pytest.raises(ValueError, match="mode"):
        stitch(np.zeros((len(tiles), 4, 4)), tiles, (10, 10), "median")
    with pytest.raises(ValueError, match="tile outputs"):
        stitch(np.zeros((1, 4, 4)), tiles, (10, 10))
