"""In-memory larcv3 products: the types every layer of tpcflow passes around.

These mirror the larcv3 data products (larcv3 ``EventSparseTensor2D/3D``,
``EventSparseCluster2D/3D``, ``EventTensor2D``, ``EventParticle``,
``EventBBox2D/3D``) as plain numpy containers.  They hold no file handle.

Conventions (larcv3 ImageMeta, checked against larcv 3.5.1):

* A sparse voxel index maps to coordinates row-major, last axis fastest:
  ``coords = np.unravel_index(index, meta.number_of_voxels)``.
* ``to_dense()`` returns an array of shape ``meta.number_of_voxels`` in that
  same (C) order.  For the SBND files, ``number_of_voxels = (2048, 1280)``, so
  the native dense plane is (2048, 1280).  CosmicTagger's image layout
  [H=1280, W=2048] is the transpose: ``image[h, w] = dense[w, h]``.  The one
  implementation of that layout is :func:`image_shape`, :func:`image_coordinates`
  and :func:`image_index` below (the loader's dense filler applies the same axis
  reversal to whole batches, ``transpose=True``).

Product keys are ``"<type>/<producer>"``, for example ``"sparse2d/sbndwire"``;
the producer may contain ``_``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tpcflow.errors import DataFormatError

__all__ = [
    "PREDICTION_PRODUCER",
    "PRODUCT_TYPES",
    "BBoxSet",
    "ClusterProjection",
    "DenseImage",
    "Event",
    "EventID",
    "ImageMeta",
    "ParticleSet",
    "ProductInfo",
    "SparseProjection",
    "image_coordinates",
    "image_index",
    "image_shape",
    "prediction_producers",
    "product_key",
    "split_key",
]

#: larcv3 product types tpcflow reads and writes.
PRODUCT_TYPES = (
    "sparse2d",
    "sparse3d",
    "cluster2d",
    "cluster3d",
    "image2d",
    "tensor1d",
    "tensor3d",
    "tensor4d",
    "particle",
    "bbox2d",
    "bbox3d",
)


def product_key(ptype: str, producer: str) -> str:
    """Return the product key ``"<type>/<producer>"``."""
    return f"{ptype}/{producer}"


def split_key(key: str) -> tuple[str, str]:
    """Split ``"<type>/<producer>"`` (or ``"<type>_<producer>"``) into (type, producer).

    Raises
    ------
    ValueError
        If the key does not start with a known product type.
    """
    if "/" in key:
        ptype, producer = key.split("/", 1)
        if ptype in PRODUCT_TYPES and producer:
            return ptype, producer
    for ptype in PRODUCT_TYPES:
        if key.startswith(ptype + "_") and len(key) > len(ptype) + 1:
            return ptype, key[len(ptype) + 1 :]
    raise ValueError(
        f"product key {key!r} must be '<type>/<producer>' with type one of {', '.join(PRODUCT_TYPES)}"
    )


@dataclass(frozen=True)
class EventID:
    """larcv3 event id: run / subrun / event (int64). Unset is ``LONG_MAX`` (or -1)."""

    run: int
    subrun: int
    event: int

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.run, self.subrun, self.event)


@dataclass(frozen=True)
class ProductInfo:
    """A product present in a dataset: larcv3 group ``/Data/<type>_<producer>_group``."""

    type: str
    producer: str
    projections: int

    @property
    def key(self) -> str:
        return product_key(self.type, self.producer)


@dataclass(frozen=True)
class ImageMeta:
    """larcv3 ImageMeta (2D: ImageMeta2D, itemsize 72; 3D: ImageMeta3D).

    Attributes
    ----------
    projection_id : int
        Plane (2D) or projection index.
    number_of_voxels : tuple of int
        Grid size per axis, in larcv3 axis order.
    image_sizes : tuple of float
        Physical extent per axis [cm, or wire/tick units for SBND].
    origin : tuple of float
        Physical position of the grid's lower corner.
    valid : bool
        larcv3's ``valid`` flag.
    """

    projection_id: int
    number_of_voxels: tuple[int, ...]
    image_sizes: tuple[float, ...]
    origin: tuple[float, ...]
    valid: bool = True

    @property
    def ndim(self) -> int:
        return len(self.number_of_voxels)

    @property
    def total_voxels(self) -> int:
        return int(np.prod(self.number_of_voxels, dtype=np.int64))

    @property
    def voxel_size(self) -> tuple[float, ...]:
        return tuple(s / n for s, n in zip(self.image_sizes, self.number_of_voxels))

    def coordinates(self, index: np.ndarray) -> np.ndarray:
        """Map voxel indices (N,) uint64 to integer coordinates (N, ndim) int64 (row-major)."""
        index = np.asarray(index, dtype=np.int64)
        return np.stack(np.unravel_index(index, self.number_of_voxels), axis=-1).astype(np.int64)

    def index(self, coords: np.ndarray) -> np.ndarray:
        """Map coordinates (N, ndim) to voxel indices (N,) uint64 (row-major)."""
        coords = np.asarray(coords, dtype=np.int64)
        return np.ravel_multi_index(tuple(coords.T), self.number_of_voxels).astype(np.uint64)

    def to_dict(self) -> dict:
        """Plain JSON types, every field by name (the one serialisation of a meta outside HDF5).

        ``{"projection_id": int, "number_of_voxels": [int], "image_sizes": [float],
        "origin": [float], "valid": bool}``; :meth:`from_dict` inverts it exactly.
        """
        return {
            "projection_id": int(self.projection_id),
            "number_of_voxels": [int(n) for n in self.number_of_voxels],
            "image_sizes": [float(s) for s in self.image_sizes],
            "origin": [float(o) for o in self.origin],
            "valid": bool(self.valid),
        }

    @classmethod
    def from_dict(cls, d) -> "ImageMeta":
        """Build a meta from :meth:`to_dict` output (``valid`` defaults to True when absent).

        Raises
        ------
        DataFormatError
            If a field is missing, of the wrong type, or the axes disagree in length.
        """
        try:
            meta = cls(
                projection_id=int(d["projection_id"]),
                number_of_voxels=tuple(int(n) for n in d["number_of_voxels"]),
                image_sizes=tuple(float(s) for s in d["image_sizes"]),
                origin=tuple(float(o) for o in d["origin"]),
                valid=bool(d.get("valid", True)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataFormatError(f"not an ImageMeta dict ({type(err).__name__}: {err}): {d!r:.200}",
                                  field="meta") from None
        if not len(meta.number_of_voxels) == len(meta.image_sizes) == len(meta.origin):
            raise DataFormatError(f"ImageMeta axes disagree in length: {d!r:.200}", field="meta")
        return meta


@dataclass
class SparseProjection:
    """One projection of a sparse2d / sparse3d product (larcv3 SparseTensor).

    Attributes
    ----------
    meta : ImageMeta
    index : (N,) uint64, voxel indices, ascending
    values : (N,) float32, voxel values (charge [ADC] or label)
    """

    meta: ImageMeta
    index: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return int(self.index.shape[0])

    @property
    def coords(self) -> np.ndarray:
        """(N, ndim) int64 voxel coordinates."""
        return self.meta.coordinates(self.index)

    def to_dense(self, dtype=np.float32) -> np.ndarray:
        """Return the dense array of shape ``meta.number_of_voxels`` (zeros where empty)."""
        out = np.zeros(self.meta.number_of_voxels, dtype=dtype)
        out.reshape(-1)[self.index.astype(np.int64)] = self.values
        return out


@dataclass
class ClusterProjection:
    """One projection of a cluster2d / cluster3d product (larcv3 SparseCluster).

    Attributes
    ----------
    meta : ImageMeta
    clusters : list of SparseProjection
        One voxel set per cluster, all sharing ``meta``.
    ids : (K,) uint32, larcv3 ``cluster_extents.ID`` of each cluster
    """

    meta: ImageMeta
    clusters: list[SparseProjection]
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))


@dataclass
class DenseImage:
    """A dense image2d (larcv3 Tensor2D) or tensor1d/3d/4d projection.

    Attributes
    ----------
    meta : ImageMeta
    data : ndarray float32 of shape ``meta.number_of_voxels``
    """

    meta: ImageMeta
    data: np.ndarray

    def to_sparse(self) -> "SparseProjection":
        """The non-zero voxels as a :class:`SparseProjection` (row-major index, float32 values).

        The inverse of :meth:`SparseProjection.to_dense` for images whose empty voxels are 0.
        """
        flat = np.asarray(self.data, dtype=np.float32).reshape(-1)
        index = np.flatnonzero(flat)
        return SparseProjection(self.meta, index.astype(np.uint64), flat[index])


@dataclass
class ParticleSet:
    """A particle product (larcv3 Particle, 344-byte struct, 25 fields).

    Attributes
    ----------
    array : (K,) structured ndarray with the larcv3 particle dtype.
    """

    array: np.ndarray

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def to_dicts(self) -> list[dict]:
        """Return one dict per particle; ``process`` is cut at its first NUL and decoded."""
        names = self.array.dtype.names or ()
        out = []
        for row in self.array:
            d = {}
            for name in names:
                v = row[name]
                if isinstance(v, bytes):
                    d[name] = v.split(b"\0", 1)[0].decode("ascii", "replace")
                elif isinstance(v, np.void):
                    d[name] = {k: v[k].item() for k in v.dtype.names}
                else:
                    d[name] = v.item()
            out.append(d)
        return out


@dataclass
class BBoxSet:
    """bbox2d / bbox3d boxes of one projection (larcv3 BBox2D/BBox3D).

    Attributes
    ----------
    meta : ImageMeta or None
    centroids : (K, ndim) float64
    half_sizes : (K, ndim) float64
    rotations : (K, ndim, ndim) float64 or None
    """

    meta: ImageMeta | None
    centroids: np.ndarray
    half_sizes: np.ndarray
    rotations: np.ndarray | None = None


@dataclass
class Event:
    """One entry of a larcv3 dataset.

    Attributes
    ----------
    entry : int
        Global entry index in the (possibly multi-file) dataset; -1 if not from a file.
    event_id : EventID
    products : dict
        Keyed ``"<type>/<producer>"``. Values by type:

        * sparse2d/sparse3d: list of :class:`SparseProjection` (one per projection)
        * cluster2d/cluster3d: list of :class:`ClusterProjection`
        * image2d/tensor*: list of :class:`DenseImage`
        * particle: :class:`ParticleSet`
        * bbox2d/bbox3d: list of :class:`BBoxSet`
    """

    event_id: EventID
    products: dict = field(default_factory=dict)
    entry: int = -1


# -- CosmicTagger image layout ---------------------------------------------------------------
def image_shape(number_of_voxels) -> tuple[int, int]:
    """(H, W) of the CosmicTagger image of a 2D projection with ``number_of_voxels = (W, H)``.

    Source: CosmicTagger ``larcv_io``: SBND planes of ``number_of_voxels = (2048, 1280)`` are
    images ``[H=1280, W=2048]``, ``image[h, w] = dense[w, h]``.
    """
    w, h = (int(n) for n in number_of_voxels)
    return h, w


def image_coordinates(index: np.ndarray, number_of_voxels) -> tuple[np.ndarray, np.ndarray]:
    """Map larcv3 voxel indices (N,) of a 2D projection to CosmicTagger image pixels ``(h, w)``.

    Returns
    -------
    h, w : (N,) int64
        Row and column of ``image[h, w]``; the larcv3 index is row-major over ``(W, H)``,
        ``index = w * H + h``.
    """
    h_n, _ = image_shape(number_of_voxels)
    w, h = np.divmod(np.asarray(index).astype(np.int64), h_n)
    return h, w


#: producer of the predicted labels, as ``tpcflow submit`` and ``tpcflow inference`` write them
PREDICTION_PRODUCER = "cosmicseg_pred"


def prediction_producers(out_producer: str, name: str, columns: int = 1) -> list[str]:
    """larcv3 sparse2d producers of one network output, the one naming rule of submit and inference.

    The ``label`` output is ``<out_producer>``; any other output ``<out_producer>_<name>``
    (``cosmicseg_pred_score``), with ``_<k>`` appended per column when it has several.
    """
    base = out_producer if name == "label" else f"{out_producer}_{name}"
    return [base] if columns == 1 else [f"{base}_{k}" for k in range(columns)]


def image_index(h: np.ndarray, w: np.ndarray, number_of_voxels) -> np.ndarray:
    """Inverse of :func:`image_coordinates`: (N,) uint64 larcv3 voxel indices ``w * H + h``."""
    h_n, _ = image_shape(number_of_voxels)
    return (np.asarray(w, dtype=np.int64) * h_n + np.asarray(h, dtype=np.int64)).astype(np.uint64)
