"""tpcflow.io: read and write LArTPC data (larcv3 HDF5; larcv2 and plain ROOT via submodules).

``tpcflow.io.larcv3`` (numpy + h5py) is exported here.  The ROOT readers
(``tpcflow.io.larcv_root``, ``tpcflow.io.root``) import uproot, so they are not
imported eagerly: ``from tpcflow.io.larcv_root import read_larcv2_images``.
"""

from __future__ import annotations

from .larcv3 import Larcv3Reader, Larcv3Writer, SparseBlock, open_larcv3, write_larcv3
from .products import (
    BBoxSet,
    ClusterProjection,
    DenseImage,
    Event,
    EventID,
    ImageMeta,
    ParticleSet,
    ProductInfo,
    SparseProjection,
)

__all__ = [
    "BBoxSet",
    "ClusterProjection",
    "DenseImage",
    "Event",
    "EventID",
    "ImageMeta",
    "Larcv3Reader",
    "Larcv3Writer",
    "ParticleSet",
    "ProductInfo",
    "SparseBlock",
    "SparseProjection",
    "open_larcv3",
    "write_larcv3",
]
