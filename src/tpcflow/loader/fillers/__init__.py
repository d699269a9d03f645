"""Batch fillers: each fills exactly one named batch of one dtype (larcv ``BatchFillerX``).

=============================================  ===============  =======================================
ProcessType                                    product          batch
=============================================  ===============  =======================================
BatchFillerImage2D, BatchFillerTensor2D        image2d          dense [B, C, *number_of_voxels]
BatchFillerSparseToDense2D / 3D                sparse2d / 3d    dense [B, C, *shape]; ``Downsample: k``
                                                                pools by 2**k (``Pooling``), 2D default
                                                                CosmicTagger layout [B, C, H, W]
BatchFillerSparseTensor2D / 3D                 sparse2d / 3d    [B, C, MaxVoxels, ndim+1], fill -999
BatchFillerSparseCOO2D / 3D                    sparse2d / 3d    [N, 2+ndim+1] (batch, channel, coords,
                                                                value), N varies
BatchFillerCluster2D / 3D                      cluster2d / 3d   per-voxel instance label (cluster index
                                                                in the projection, background -1);
                                                                ``Format`` dense / sparse / coo
BatchFillerPIDLabel                            particle         [B, K] one-hot (or [B] index)
BatchFillerMultiLabel                          particle         [B, K] multi-hot
=============================================  ===============  =======================================

``Channels`` lists projection ids (larcv3 ``ImageMeta.projection_id``); the output channel
order is the list order.  ``DataType`` picks the dtype: float32, float64, int32, int64, uint8.
``Augment: true`` (voxel-based fillers) mirrors each axis of each entry with probability 1/2,
as larcv3 does, but with the same flips for every filler of a minibatch (drawn from
``RandomSeed``, the epoch and the batch index), so that images and labels stay aligned;
larcv3's default is true, tpcflow's is false.

Sources: larcv ``BatchFillerImage2D``/``BatchFillerTemplate`` (larcv2 ThreadIO), larcv3
``queueio/BatchFillerSparseTensor.cxx``, ``BatchFillerPIDLabel.cxx``; CosmicTagger data layout.
"""

from __future__ import annotations

from tpcflow.errors import ConfigError, closest
from tpcflow.loader.fillers.base import DTYPES, Filler, PositionError
from tpcflow.loader.fillers.event import Image2D, PIDLabel
from tpcflow.loader.fillers.sparse import Cluster, SparseCOO, SparsePadded, SparseToDense

__all__ = ["DTYPES", "FILLERS", "Filler", "PositionError", "make_filler"]

FILLERS: dict[str, type[Filler]] = {
    "BatchFillerImage2D": Image2D,
    "BatchFillerTensor2D": Image2D,
    "BatchFillerSparseToDense2D": SparseToDense,
    "BatchFillerSparseToDense3D": SparseToDense,
    "BatchFillerSparseTensor2D": SparsePadded,
    "BatchFillerSparseTensor3D": SparsePadded,
    "BatchFillerSparseCOO2D": SparseCOO,
    "BatchFillerSparseCOO3D": SparseCOO,
    "BatchFillerCluster2D": Cluster,
    "BatchFillerCluster3D": Cluster,
    "BatchFillerPIDLabel": PIDLabel,
    "BatchFillerMultiLabel": PIDLabel,
}


def make_filler(name: str, process_type: str, cfg: dict) -> Filler:
    """Build the filler for ``process_type`` from its ProcessList block.

    Raises
    ------
    ConfigError
        Unknown process type (lists the closest ones), unknown or missing key, bad value.
    """
    if process_type not in FILLERS:
        raise ConfigError(
            f"unknown ProcessType {process_type!r} for {name!r}\nAvailable: {', '.join(closest(process_type, FILLERS))}"
        )
    return FILLERS[process_type](name, process_type, cfg or {})
