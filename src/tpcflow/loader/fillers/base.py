"""The batch filler interface, its configuration handling and the voxel-based base class.

See :mod:`tpcflow.loader.fillers` for the table of fillers.
"""

from __future__ import annotations

import numpy as np

from tpcflow.errors import ConfigError, DataFormatError, ProductNotFoundError, closest
from tpcflow.io.products import ImageMeta, ProductInfo
from tpcflow.loader.voxels import VoxelBatch, flip_voxels

__all__ = ["DTYPES", "Filler", "PositionError"]

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
