"""Pure-torch submanifold sparse convolutions and the sparse UResNet.

* :mod:`tpcflow.models.sparse.ops`: geometry (sorted linear keys, ``searchsorted`` neighbour
  maps, 2x2 pooling maps) and the submanifold convolution (gather + matmul, gather-only backward).
* :mod:`tpcflow.models.sparse.layers`: sparse blocks with the dense blocks' parameter layout.
* :mod:`tpcflow.models.sparse.uresnet`: :class:`SparseUResNet`, :func:`sparsify`, :func:`to_dense`.

Why pure torch and not spconv: see ``docs/sparse.md``.
"""

from tpcflow.models.sparse.ops import PoolMap, SparseGeometry, submanifold_conv
from tpcflow.models.sparse.uresnet import SparseUResNet, background_logits, sparsify, to_dense

__all__ = [
    "PoolMap",
    "SparseGeometry",
    "SparseUResNet",
    "background_logits",
    "sparsify",
    "submanifold_conv",
    "to_dense",
]
