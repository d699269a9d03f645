"""Voxel-based fillers: sparse2d/3d to dense, padded and COO batches; cluster instance labels.

Sources: larcv3 ``queueio/BatchFillerSparseTensor.cxx``; CosmicTagger data layout.
"""

from __future__ import annotations

import numpy as np

from tpcflow.errors import ConfigError
from tpcflow.io.products import Event
from tpcflow.loader.fillers.base import _REQUIRED, PositionError, _VoxelFiller
from tpcflow.loader.voxels import (
    GroupOverflowError,
    VoxelBatch,
    dense_shape,
    fill_coo,
    fill_dense,
    fill_padded,
    fill_pooled_coo,
)

__all__ = ["Cluster", "SparseCOO", "SparsePadded", "SparseToDense"]


class SparseToDense(_VoxelFiller):
    tracks_dirty = True
    params = {"Channels": None, "Downsample": 0, "Pooling": "mean", "Transpose": None, "Augment": False}

    def __init__(self, name, process_type, cfg):
        super().__init__(name, process_type, cfg)
        self.ptype = "sparse3d" if process_type.endswith("3D") else "sparse2d"
        self.key = f"{self.ptype}/{self.producer}"
        self.downsample = int(self.cfg["Downsample"])
        self.pooling = self.cfg["Pooling"]
        t = self.cfg["Transpose"]
        self.transpose = (self.ptype == "sparse2d") if t is None else bool(t)
        self.augment = bool(self.cfg["Augment"])
        if self.downsample < 0 or self.pooling not in ("mean", "max", "sum"):
            raise ConfigError(f"batch filler {name!r}: Downsample must be >= 0 and Pooling mean/max/sum")

    def shape(self, batch_size):
        return (batch_size, len(self.channels), *dense_shape(self.number_of_voxels, self.downsample, self.transpose))

    def fill(self, out, data, batch_size, flips=None):
        vb = self._augmented(self.voxels(data, batch_size), flips)
        return fill_dense(out, vb, downsample=self.downsample, transpose=self.transpose, pooling=self.pooling)


class SparsePadded(_VoxelFiller):
    params = {
        "Channels": None,
        "MaxVoxels": _REQUIRED,
        "UnfilledVoxelValue": -999.0,
        "IncludeValues": True,
        "AllowEmpty": False,
        "Augment": False,
    }

    def __init__(self, name, process_type, cfg):
        super().__init__(name, process_type, cfg)
        self.ptype = "sparse3d" if process_type.endswith("3D") else "sparse2d"
        self.key = f"{self.ptype}/{self.producer}"
        self.max_voxels = int(self.cfg["MaxVoxels"])
        self.fill_value = float(self.cfg["UnfilledVoxelValue"])
        if self.max_voxels <= 0:
            raise ConfigError(f"batch filler {name!r}: MaxVoxels must be > 0, but got {self.max_voxels}")
        self.augment = bool(self.cfg["Augment"])

    def shape(self, batch_size):
        d = len(self.number_of_voxels) + (1 if self.cfg["IncludeValues"] else 0)
        return (batch_size, len(self.channels), self.max_voxels, d)

    def fill(self, out, data, batch_size, flips=None):
        vb = self._augmented(self.voxels(data, batch_size), flips)
        if not self.cfg["AllowEmpty"]:
            empty = np.setdiff1d(np.arange(batch_size), vb.batch)
            if len(empty):
                raise PositionError(
                    f"{self.key} has no voxel in the selected channels (set AllowEmpty: true to allow)",
                    int(empty[0]),
                )
        fill_padded(out, vb, include_values=bool(self.cfg["IncludeValues"]))


class SparseCOO(_VoxelFiller):
    """COO rows ``(batch, channel, coords..., value)``.

    Without ``Pooling``: the file's voxels, each (entry, channel) truncated at ``MaxVoxels``
    (larcv3's convention).  With ``Pooling`` (mean/max/sum): the non-zero pixels of the dense
    batch that ``BatchFillerSparseToDense`` makes with the same ``Downsample``, ``Pooling`` and
    ``Transpose``, values bit for bit (:func:`~tpcflow.loader.voxels.fill_pooled_coo`); an
    (entry, channel) with more than ``MaxVoxels`` pixels is an error, never truncated.
    """

    variable = True
    params = {"Channels": None, "MaxVoxels": _REQUIRED, "Augment": False, "Downsample": 0, "Pooling": None,
              "Transpose": False}

    def __init__(self, name, process_type, cfg):
        super().__init__(name, process_type, cfg)
        self.ptype = "sparse3d" if process_type.endswith("3D") else "sparse2d"
        self.key = f"{self.ptype}/{self.producer}"
        self.max_voxels = int(self.cfg["MaxVoxels"])
        self.augment = bool(self.cfg["Augment"])
        self.pooling = self.cfg["Pooling"]
        self.downsample = int(self.cfg["Downsample"])
        self.transpose = bool(self.cfg["Transpose"])
        if self.pooling is None and (self.downsample or self.transpose):
            raise ConfigError(f"batch filler {name!r}: Downsample and Transpose need Pooling (mean, max or sum)")
        if self.pooling not in (None, "mean", "max", "sum") or self.downsample < 0:
            raise ConfigError(f"batch filler {name!r}: Downsample must be >= 0 and Pooling mean/max/sum")

    def shape(self, batch_size):
        return (batch_size * len(self.channels) * self.max_voxels, 3 + len(self.number_of_voxels))

    def fill(self, out, data, batch_size, flips=None):
        vb = self._augmented(self.voxels(data, batch_size), flips)
        if self.pooling is None:
            return fill_coo(out, vb, n_channels=len(self.channels), max_voxels=self.max_voxels)
        try:
            return fill_pooled_coo(out, vb, n_channels=len(self.channels), max_voxels=self.max_voxels,
                                   downsample=self.downsample, transpose=self.transpose, pooling=self.pooling)
        except GroupOverflowError as err:
            raise PositionError(f"{self.key}: {err}", err.position) from None


class Cluster(_VoxelFiller):
    """Per-voxel instance label: the cluster's position in its projection; empty voxels -1."""

    source = "event"
    default_dtype = "int64"
    params = {
        "Channels": None,
        "Format": "dense",
        "Downsample": 0,
        "Transpose": None,
        "MaxVoxels": 0,
        "Background": -1,
        "Augment": False,
    }

    def __init__(self, name, process_type, cfg):
        super().__init__(name, process_type, cfg)
        self.ptype = "cluster3d" if process_type.endswith("3D") else "cluster2d"
        self.key = f"{self.ptype}/{self.producer}"
        self.format = self.cfg["Format"]
        if self.format not in ("dense", "sparse", "coo"):
            raise ConfigError(f"batch filler {name!r}: Format must be dense, sparse or coo, got {self.format!r}")
        self.downsample = int(self.cfg["Downsample"])
        t = self.cfg["Transpose"]
        self.transpose = (self.ptype == "cluster2d") if t is None else bool(t)
        self.max_voxels = int(self.cfg["MaxVoxels"])
        if self.format != "dense" and self.max_voxels <= 0:
            raise ConfigError(f"batch filler {name!r}: Format {self.format!r} needs MaxVoxels > 0")
        self.fill_value = float(self.cfg["Background"])
        self.augment = bool(self.cfg["Augment"])
        self.tracks_dirty = self.format == "dense"
        self.variable = self.format == "coo"

    def shape(self, batch_size):
        c, nd = len(self.channels), len(self.number_of_voxels)
        if self.format == "dense":
            return (batch_size, c, *dense_shape(self.number_of_voxels, self.downsample, self.transpose))
        if self.format == "sparse":
            return (batch_size, c, self.max_voxels, nd + 1)
        return (batch_size * c * self.max_voxels, 3 + nd)

    def voxels(self, events: list[Event], batch_size):
        idx, val, bpos, chan = [], [], [], []
        for b, ev in enumerate(events):
            for proj in ev.products[self.key]:
                c = self.channels.index(proj.meta.projection_id) if proj.meta.projection_id in self.channels else -1
                if c < 0:
                    continue
                for k, cl in enumerate(proj.clusters):
                    n = len(cl.index)
                    idx.append(cl.index.astype(np.int64))
                    val.append(np.full(n, k, dtype=np.float32))
                    bpos.append(np.full(n, b, dtype=np.int64))
                    chan.append(np.full(n, c, dtype=np.int64))
        if not idx:
            z = np.zeros(0, np.int64)
            return VoxelBatch(z, z, z, np.zeros(0, np.float32), self.number_of_voxels)
        cat = np.concatenate
        return VoxelBatch(cat(bpos), cat(chan), cat(idx), cat(val), self.number_of_voxels)

    def fill(self, out, data, batch_size, flips=None):
        vb = self._augmented(self.voxels(data, batch_size), flips)
        if self.format == "dense":
            return fill_dense(out, vb, downsample=self.downsample, transpose=self.transpose, pooling="max")
        if self.format == "sparse":
            fill_padded(out, vb)
            return None
        return fill_coo(out, vb, n_channels=len(self.channels), max_voxels=self.max_voxels)
