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

import numpy as np

from tpcflow.errors import ConfigError, DataFormatError, ProductNotFoundError, closest
from tpcflow.io.products import Event, ImageMeta, ProductInfo
from tpcflow.loader.voxels import VoxelBatch, dense_shape, fill_coo, fill_dense, fill_padded, flip_voxels

__all__ = ["DTYPES", "FILLERS", "Filler", "PositionError", "make_filler"]

DTYPES = {n: np.dtype(n) for n in ("float32", "float64", "int32", "int64", "uint8")}
_REQUIRED = object()
_PRODUCER_KEYS = (
    "Producer",
    "ImageProducer",
    "TensorProducer",
    "Tensor2DProducer",
    "Tensor3DProducer",
    "Cluster2DProducer",
    "Cluster3DProducer",
    "ParticleProducer",
)
_COMMON = {"Verbosity": 2, "CaffeMode": False, "DataType": None}


class PositionError(DataFormatError):
    """A filler's complaint about batch position ``position`` (the worker maps it to file and entry)."""

    def __init__(self, what, position):
        self.position = position
        super().__init__(what)


class Filler:
    """Base batch filler.  Subclasses set ``ptype``, ``params`` and implement ``shape``/``fill``.

    Attributes
    ----------
    name : str
        Batch name (``ProcessName``).
    key : str
        Product key ``"<type>/<producer>"``.
    dtype : numpy.dtype
    fill_value : float
        Value of a batch element that no voxel wrote.
    variable : bool
        True if the leading dimension varies per batch (COO); ``fill`` returns the row count.
    tracks_dirty : bool
        True if ``fill`` returns the flat indices it wrote, so that the storage clears only them.
    """

    ptype = ""
    source = "event"  # "sparse": reads voxel blocks; "event": reads Event objects
    params: dict = {}
    default_dtype = "float32"
    variable = False
    tracks_dirty = False
    fill_value = 0.0

    def __init__(self, name: str, process_type: str, cfg: dict):
        self.name = name
        self.process_type = process_type
        allowed = {**_COMMON, **self.params}
        cfg = dict(cfg)
        producers = [k for k in _PRODUCER_KEYS if k in cfg]
        if len(producers) != 1:
            raise ConfigError(
                f"batch filler {name!r} ({process_type}) needs exactly one producer key "
                f"(one of {', '.join(_PRODUCER_KEYS)}), but got {producers or 'none'}"
            )
        self.producer = str(cfg.pop(producers[0]))
        for k in cfg:
            if k not in allowed:
                raise ConfigError(
                    f"unknown key {k!r} for batch filler {name!r} ({process_type})\n"
                    f"Available: {', '.join(closest(k, list(allowed) + list(_PRODUCER_KEYS)))}"
                )
        self.cfg = {k: (cfg[k] if k in cfg else v) for k, v in allowed.items()}
        missing = [k for k, v in self.cfg.items() if v is _REQUIRED]
        if missing:
            raise ConfigError(f"batch filler {name!r} ({process_type}) needs key(s) {missing}")
        if self.cfg["CaffeMode"]:
            raise ConfigError(f"batch filler {name!r}: CaffeMode: true is not supported")
        dt = self.cfg["DataType"] or self.default_dtype
        if dt not in DTYPES:
            raise ConfigError(f"batch filler {name!r}: DataType {dt!r} must be one of {', '.join(DTYPES)}")
        self.dtype = DTYPES[dt]
        self.key = f"{self.ptype}/{self.producer}"
        self.metas: list[ImageMeta] = []

    # -- configure time -------------------------------------------------------
    def bind(self, products: dict[str, ProductInfo], metas: list[ImageMeta] | None, *, file_path=None) -> None:
        """Check the product exists and remember its projections' metas.

        Raises
        ------
        ProductNotFoundError
            If the product is not in the input; the message lists the available products.
        ConfigError
            If a channel names a projection the product does not have.
        """
        if self.key not in products:
            raise ProductNotFoundError(
                f"{self.key} (batch filler {self.name!r})", available=products, file_path=file_path
            )
        self.metas = list(metas or [])

    def _bind_channels(self) -> None:
        ids = [m.projection_id for m in self.metas]
        chans = self.cfg.get("Channels")
        chans = list(range(len(ids))) if chans is None else [int(c) for c in chans]
        bad = [c for c in chans if c not in ids]
        if bad or not chans:
            raise ConfigError(
                f"batch filler {self.name!r}: Channels {chans} must be projection ids of {self.key}, "
                f"which has {ids}"
            )
        self.channels = chans
        self.chan_of_proj = np.array([chans.index(i) if i in chans else -1 for i in ids], dtype=np.int64)
        nvs = {tuple(self.metas[ids.index(c)].number_of_voxels) for c in chans}
        if len(nvs) != 1:
            raise ConfigError(f"batch filler {self.name!r}: channels {chans} of {self.key} have different grids {nvs}")
        self.number_of_voxels = nvs.pop()

    def shape(self, batch_size: int) -> tuple[int, ...]:
        raise NotImplementedError

    def fill(self, out: np.ndarray, data, batch_size: int, flips=None):
        """Fill ``out`` from ``data``; ``flips`` (B, 3) bool mirrors axes where ``Augment`` is on."""
        raise NotImplementedError


# --------------------------------------------------------------------------- voxel-based
class _VoxelFiller(Filler):
    source = "sparse"
    params = {"Channels": None}
    augment = False

    def _augmented(self, vb: VoxelBatch, flips) -> VoxelBatch:
        return flip_voxels(vb, flips) if (self.augment and flips is not None) else vb

    def bind(self, products, metas, *, file_path=None):
        super().bind(products, metas, file_path=file_path)
        self._bind_channels()

    def voxels(self, data, batch_size: int) -> VoxelBatch:
        """Build a VoxelBatch from ``data = (index, values, counts (B, P))`` in batch order."""
        index, values, counts = data
        b, p = counts.shape
        if p != len(self.chan_of_proj):
            raise DataFormatError(f"{self.key} has {p} projections, expected {len(self.chan_of_proj)}")
        per = counts.reshape(-1)
        bpos = np.repeat(np.repeat(np.arange(b, dtype=np.int64), p), per)
        chan = np.repeat(np.tile(self.chan_of_proj, b), per)
        keep = chan >= 0
        if not keep.all():
            bpos, chan, index, values = bpos[keep], chan[keep], index[keep], values[keep]
        return VoxelBatch(bpos, chan, index.astype(np.int64, copy=False), values, self.number_of_voxels)


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
    variable = True
    params = {"Channels": None, "MaxVoxels": _REQUIRED, "Augment": False}

    def __init__(self, name, process_type, cfg):
        super().__init__(name, process_type, cfg)
        self.ptype = "sparse3d" if process_type.endswith("3D") else "sparse2d"
        self.key = f"{self.ptype}/{self.producer}"
        self.max_voxels = int(self.cfg["MaxVoxels"])
        self.augment = bool(self.cfg["Augment"])

    def shape(self, batch_size):
        return (batch_size * len(self.channels) * self.max_voxels, 3 + len(self.number_of_voxels))

    def fill(self, out, data, batch_size, flips=None):
        vb = self._augmented(self.voxels(data, batch_size), flips)
        return fill_coo(out, vb, n_channels=len(self.channels), max_voxels=self.max_voxels)


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


# --------------------------------------------------------------------------- event-based
class Image2D(Filler):
    ptype = "image2d"
    params = {"Channels": None}

    def bind(self, products, metas, *, file_path=None):
        super().bind(products, metas, file_path=file_path)
        self._bind_channels()

    def shape(self, batch_size):
        return (batch_size, len(self.channels), *self.number_of_voxels)

    def fill(self, out, events, batch_size, flips=None):
        for b, ev in enumerate(events):
            by_id = {img.meta.projection_id: img for img in ev.products[self.key]}
            for c, pid in enumerate(self.channels):
                if pid not in by_id:
                    raise DataFormatError(f"{self.key} has no projection {pid}", entry=ev.entry)
                out[b, c] = by_id[pid].data


class PIDLabel(Filler):
    ptype = "particle"
    params = {"PdgClassList": _REQUIRED, "OneHot": True, "AllowUnknown": False}

    def __init__(self, name, process_type, cfg):
        super().__init__(name, process_type, cfg)
        self.pdgs = [int(p) for p in self.cfg["PdgClassList"]]
        if not self.pdgs:
            raise ConfigError(f"batch filler {name!r}: PdgClassList must not be empty")
        self.multi = process_type == "BatchFillerMultiLabel"

    def shape(self, batch_size):
        return (batch_size, len(self.pdgs)) if (self.cfg["OneHot"] or self.multi) else (batch_size,)

    def fill(self, out, events, batch_size, flips=None):
        out[...] = 0
        for b, ev in enumerate(events):
            pdg = ev.products[self.key].array["pdg"]
            hits = [k for k, p in enumerate(self.pdgs) if np.any(pdg == p)]
            if self.multi:
                out[b, hits] = 1
                continue
            first = [self.pdgs.index(int(p)) for p in pdg if int(p) in self.pdgs]
            if not first:
                if not self.cfg["AllowUnknown"]:
                    raise DataFormatError(
                        f"no particle of {self.key} has a pdg in PdgClassList {self.pdgs} (pdgs: {pdg.tolist()})",
                        entry=ev.entry,
                    )
                if not self.cfg["OneHot"]:
                    out[b] = -1 if out.dtype.kind in "if" else 0
                continue
            if self.cfg["OneHot"]:
                out[b, first[0]] = 1
            else:
                out[b] = first[0]


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
