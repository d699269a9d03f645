"""Whole detector planes through networks of a fixed input size: crop into tiles, run, stitch back.

MicroBooNE planes are 1008 x 3456 (time x wire); networks such as ubSSNet take 512 x 832 crops.
:func:`tile_grid` covers a plane with tiles of a given size and overlap (the last tile of each
axis is aligned to the plane's end, so no tile leaves the plane and every pixel is covered);
:func:`crop` cuts them out as one batch; :func:`stitch` puts the network's outputs back, with
``overwrite`` (later tiles win), ``mean`` or ``max`` where tiles overlap; :func:`apply_tiled`
does all three.  Numpy only: usable by a worker (the network sees tiles) or by a client.

Exactness: a pixel covered by one tile gets that tile's output unchanged, whatever the mode; in
overlaps the modes differ only when the tiles disagree (a network whose output at a pixel
depends on its neighbours sees different context near tile borders).  A plane smaller than the
tile is zero-padded at its end and the padding is cut off again.

Source: ublarcvapp ``UBSplitDetector`` (fixed-size crops of the whole MicroBooNE image) and
``UBCropLArFlow``-style stitching.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["MODES", "Tile", "apply_tiled", "crop", "stitch", "tile_grid"]

MODES = ("overwrite", "mean", "max")


@dataclass(frozen=True)
class Tile:
    """One tile: rows ``[row, row + rows)`` and columns ``[col, col + cols)`` of the plane."""

    row: int
    col: int
    rows: int
    cols: int


def _starts(n: int, size: int, overlap: int) -> list[int]:
    if n <= size:
        return [0]
    step = size - overlap
    starts = list(range(0, n - size, step))
    return starts + [n - size]


def tile_grid(shape: tuple[int, int], tile: tuple[int, int], overlap: tuple[int, int] = (0, 0)) -> list[Tile]:
    """Tiles of ``tile = (rows, cols)`` covering a plane of ``shape = (H, W)``, row-major order.

    Parameters
    ----------
    shape : (H, W)
        Plane size [pixels].
    tile : (rows, cols)
        Network input size [pixels].
    overlap : (rows, cols)
        Least overlap of neighbouring tiles [pixels]; the last tile of an axis may overlap more.

    Raises
    ------
    ValueError
        If a size is not positive, or an overlap is negative or not smaller than the tile.
    """
    (h, w), (th, tw), (oh, ow) = shape, tile, overlap
    if min(h, w, th, tw) < 1:
        raise ValueError(f"plane {shape} and tile {tile} sizes must be positive")
    if not (0 <= oh < th and 0 <= ow < tw):
        raise ValueError(f"overlap {overlap} must be >= 0 and smaller than the tile {tile}")
    return [Tile(r, c, min(th, h), min(tw, w)) for r in _starts(h, th, oh) for c in _starts(w, tw, ow)]


def crop(plane: np.ndarray, tiles: list[Tile], tile: tuple[int, int]) -> np.ndarray:
    """Cut ``tiles`` out of ``plane`` ``[..., H, W]`` as one batch ``[N, ..., rows, cols]`` (zero-padded)."""
    th, tw = tile
    out = np.zeros((len(tiles), *plane.shape[:-2], th, tw), dtype=plane.dtype)
    for k, t in enumerate(tiles):
        out[k, ..., : t.rows, : t.cols] = plane[..., t.row : t.row + t.rows, t.col : t.col + t.cols]
    return out


def stitch(outputs: np.ndarray, tiles: list[Tile], shape: tuple[int, int], mode: str = "overwrite") -> np.ndarray:
    """Put tile outputs ``[N, ..., rows, cols]`` back into one plane ``[..., H, W]``.

    Parameters
    ----------
    mode : {"overwrite", "mean", "max"}
        In overlaps: the last tile's value, the mean over the tiles, or their maximum.

    Raises
    ------
    ValueError
        If ``mode`` is unknown or the number of outputs differs from the number of tiles.
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if len(outputs) != len(tiles):
        raise ValueError(f"{len(outputs)} tile outputs for {len(tiles)} tiles")
    lead = outputs.shape[1:-2]
    out = np.zeros((*lead, *shape), dtype=np.float64 if mode == "mean" else outputs.dtype)
    count = np.zeros(shape, np.int64)  # tiles that covered each pixel so far
    for o, t in zip(outputs, tiles):
        part = o[..., : t.rows, : t.cols]
        rows, cols = slice(t.row, t.row + t.rows), slice(t.col, t.col + t.cols)
        if mode == "overwrite":
            out[..., rows, cols] = part
        elif mode == "max":
            out[..., rows, cols] = np.where(count[rows, cols] > 0, np.maximum(out[..., rows, cols], part), part)
        else:
            out[..., rows, cols] += part
        count[rows, cols] += 1
    if mode == "mean":
        out = (out / count).astype(outputs.dtype, copy=False)
    return out


def apply_tiled(fn: Callable[[np.ndarray], np.ndarray], plane: np.ndarray, tile: tuple[int, int],
                overlap: tuple[int, int] = (0, 0), mode: str = "overwrite", batch: int = 8) -> np.ndarray:
    """Run ``fn`` on the tiles of ``plane`` ``[..., H, W]``, ``batch`` tiles per call, and stitch.

    ``fn`` maps a batch ``[n, ..., rows, cols]`` to outputs ``[n, ..., rows, cols]`` (the
    leading axes may change, e.g. classes); returns ``[..., H, W]``.
    """
    tiles = tile_grid(plane.shape[-2:], tile, overlap)
    parts = crop(plane, tiles, tile)
    outs = np.concatenate([np.asarray(fn(parts[i : i + batch])) for i in range(0, len(parts), batch)])
    return stitch(outs, tiles, plane.shape[-2:], mode)
