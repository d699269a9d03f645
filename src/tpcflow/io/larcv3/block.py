"""SparseBlock: the voxels of a contiguous range of entries of one sparse product (loader fast path)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tpcflow.errors import DataFormatError
from tpcflow.io.products import ImageMeta

__all__ = ["SparseBlock"]


@dataclass
class SparseBlock:
    """The voxels of a contiguous range of entries of one sparse2d/sparse3d product.

    Attributes
    ----------
    index : (M,) uint64
        Voxel indices, ordered entry-major then projection (ascending within a projection
        as larcv stores them).
    values : (M,) float32
        Voxel values.
    counts : (E, P) int64
        Voxels per entry and projection; P is the largest number of projections in the
        range (missing trailing projections count 0).  Column p is the same projection
        (projection_id) in every entry, else ``read_sparse_block`` raises.
    metas : list of ImageMeta, length P
        Meta of each projection (taken from the first entry with P projections).
    start : int
        Global entry of the first row of ``counts``.
    event_ids : (E, 3) int64
        run / subrun / event of each entry.
    projections : (E,) int64 or None
        Projections each entry really holds (``counts`` pads the missing ones with 0).
    """

    index: np.ndarray
    values: np.ndarray
    counts: np.ndarray
    metas: list[ImageMeta]
    start: int = 0
    event_ids: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))
    projections: np.ndarray | None = None
    _flat: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def offsets(self) -> np.ndarray:
        """(E, P) int64: position in ``index`` of the first voxel of each entry/projection."""
        flat = self.counts.reshape(-1)
        off = np.zeros(flat.shape, np.int64)
        if flat.size > 1:
            np.cumsum(flat[:-1], out=off[1:])
        return off.reshape(self.counts.shape)

    def flat_index(self) -> np.ndarray:
        """(M,) int64 index of each voxel into a (E, P, *number_of_voxels) array, flattened.

        Computed once per block (``to_dense(previous=...)`` asks for it again to clear).
        """
        if self._flat is None:
            total = self._plane_size()
            flat = self.index.astype(np.int64)
            ends = np.cumsum(self.counts.reshape(-1)).tolist()
            for k, (lo, hi) in enumerate(zip([0, *ends[:-1]], ends)):  # add plane k's offset in place
                if k and hi > lo:
                    flat[lo:hi] += k * total
            self._flat = flat
        return self._flat

    def _plane_size(self) -> int:
        shapes = {m.number_of_voxels for m in self.metas}
        if len(shapes) > 1:
            raise DataFormatError(f"projections have different number_of_voxels {sorted(shapes)}; cannot stack them")
        return self.metas[0].total_voxels if self.metas else 0

    def to_dense(self, out: np.ndarray | None = None, *, previous: SparseBlock | None = None) -> np.ndarray:
        """Return the dense (E, P, *number_of_voxels) float32 array.

        Parameters
        ----------
        out : ndarray, optional
            C-contiguous float32 array of that shape to fill; reusing one buffer avoids
            allocating and page-faulting a fresh array per call.  It is zeroed first.
        previous : SparseBlock, optional
            The block last written into ``out`` (and nothing else since): only its voxels
            are zeroed instead of the whole buffer.

        Raises
        ------
        ValueError
            If ``out`` has the wrong shape or layout.
        DataFormatError
            If the projections have different number_of_voxels.
        """
        shape = (*self.counts.shape, *(self.metas[0].number_of_voxels if self.metas else ()))
        if out is None:
            out = np.zeros(shape, np.float32)
        else:
            if out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
                raise ValueError(
                    f"out must be a C-contiguous float32 array of shape {shape}, but got {out.dtype} {out.shape}"
                )
            if previous is not None and previous.counts.shape == self.counts.shape and previous.metas == self.metas:
                out.reshape(-1)[previous.flat_index()] = 0
            else:
                out.fill(0)
        if self.index.size:
            out.reshape(-1)[self.flat_index()] = self.values
        return out
