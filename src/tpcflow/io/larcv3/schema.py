"""The larcv3 HDF5 schema: compound dtypes, dataset names, chunk sizes.

Everything here reproduces the layout the larcv 3.5.1 ``IOManager`` writes
(checked dataset by dataset against files written by larcv 3.5.1, and against
the larcv3 sources ``DataFormatTypes.h``, ``ImageMeta.h``, ``Particle.h``,
``BBox.h``, ``EventSparseTensor.cxx``, ``EventSparseCluster.cxx``,
``EventTensor.cxx``, ``EventParticle.cxx``, ``EventBBox.cxx``).

File layout::

    /Events/event_id                  (run, subrun, event) int64, one row per entry
    /Data/<type>_<producer>_group/    one group per product, 1-D chunked datasets

The dtypes carry the C struct padding of the larcv3 structs (explicit
``offsets`` and ``itemsize``), so a numpy array of these dtypes has the exact
bytes larcv reads and writes.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BBOX_DTYPES",
    "DATASETS",
    "EVENT_ID_CHUNK",
    "EVENT_ID_DTYPE",
    "EXTENTS_DTYPE",
    "IDEXTENTS_DTYPE",
    "IMAGE_META_DTYPES",
    "PARTICLE_DTYPE",
    "POINT_DTYPE",
    "PRODUCT_DIMS",
    "VOXEL_DTYPE",
    "dataset_dtype",
    "group_name",
    "parse_group_name",
]

#: larcv3 ``Extents_t {unsigned long long first; unsigned int n;}`` (itemsize 16).
EXTENTS_DTYPE = np.dtype({"names": ["first", "N"], "formats": ["<u8", "<u4"], "offsets": [0, 8], "itemsize": 16})

#: larcv3 ``IDExtents_t {first; n; id;}`` (itemsize 16).
IDEXTENTS_DTYPE = np.dtype(
    {"names": ["first", "N", "ID"], "formats": ["<u8", "<u4", "<u4"], "offsets": [0, 8, 12], "itemsize": 16}
)

#: larcv3 ``Voxel {size_t id; float value;}`` (itemsize 16).
VOXEL_DTYPE = np.dtype({"names": ["id", "value"], "formats": ["<u8", "<f4"], "offsets": [0, 8], "itemsize": 16})

#: larcv3 ``EventID`` (run, subrun, event), int64 each (itemsize 24).
EVENT_ID_DTYPE = np.dtype(
    {"names": ["run", "subrun", "event"], "formats": ["<i8", "<i8", "<i8"], "offsets": [0, 8, 16], "itemsize": 24}
)


def _image_meta_dtype(dim: int) -> np.dtype:
    """larcv3 ``ImageMeta<dim>``: valid u1 @0, projection_id u8 @8, image_sizes, number_of_voxels, origin.

    The trailing 8 bytes (``DistanceUnit_t _unit`` + padding) are not an HDF5 member.
    """
    return np.dtype(
        {
            "names": ["valid", "projection_id", "image_sizes", "number_of_voxels", "origin"],
            "formats": ["u1", "<u8", ("<f8", (dim,)), ("<u8", (dim,)), ("<f8", (dim,))],
            "offsets": [0, 8, 16, 16 + 8 * dim, 16 + 16 * dim],
            "itemsize": 16 + 24 * dim + 8,
        }
    )


#: ImageMeta dtypes by dimension: itemsize 48, 72 (ImageMeta2D), 96 (ImageMeta3D), 120.
IMAGE_META_DTYPES = {d: _image_meta_dtype(d) for d in (1, 2, 3, 4)}

#: larcv3 ``Vertex`` as stored in particles (x, y, z, t float64).
POINT_DTYPE = np.dtype({"names": ["x", "y", "z", "t"], "formats": ["<f8"] * 4, "offsets": [0, 8, 16, 24], "itemsize": 32})

#: larcv3 ``Particle`` (344 bytes, 25 fields); ``process`` is a 64-byte NUL-terminated ASCII string.
PARTICLE_DTYPE = np.dtype(
    {
        "names": [
            "id", "mcst_index", "mct_index", "shape", "current_type", "interaction_type", "trackid", "pdg",
            "px", "py", "pz", "vtx", "end_pt", "first_step", "last_step", "dist_travel", "energy_init",
            "energy_deposit", "process", "parent_trackid", "parent_pdg", "parent_vtx", "ancestor_trackid",
            "ancestor_pdg", "ancestor_vtx",
        ],
        "formats": [
            "<u2", "<u2", "<u2", "<i4", "<i2", "<i2", "<u4", "<i4",
            "<f8", "<f8", "<f8", POINT_DTYPE, POINT_DTYPE, POINT_DTYPE, POINT_DTYPE, "<f8", "<f8",
            "<f8", "S64", "<u4", "<i4", POINT_DTYPE, "<u4",
            "<i4", POINT_DTYPE,
        ],
        "offsets": [
            0, 2, 4, 8, 12, 14, 16, 20,
            24, 32, 40, 48, 80, 112, 144, 176, 184,
            192, 200, 264, 268, 272, 304,
            308, 312,
        ],
        "itemsize": 344,
    }
)  # fmt: skip


def _bbox_dtype(dim: int) -> np.dtype:
    """larcv3 ``BBox<dim>``: centroid f8[dim], half_length f8[dim], rotation f8[dim*dim] (flattened)."""
    return np.dtype(
        {
            "names": ["centroid", "half_length", "rotation"],
            "formats": [("<f8", (dim,)), ("<f8", (dim,)), ("<f8", (dim * dim,))],
            "offsets": [0, 8 * dim, 16 * dim],
            "itemsize": 16 * dim + 8 * dim * dim,
        }
    )


#: BBox dtypes: BBox2D itemsize 64, BBox3D itemsize 120.
BBOX_DTYPES = {2: _bbox_dtype(2), 3: _bbox_dtype(3)}

#: Dimension of each product type (particle: None).
PRODUCT_DIMS = {
    "sparse2d": 2,
    "sparse3d": 3,
    "cluster2d": 2,
    "cluster3d": 3,
    "image2d": 2,
    "tensor1d": 1,
    "tensor3d": 3,
    "tensor4d": 4,
    "particle": None,
    "bbox2d": 2,
    "bbox3d": 3,
}

#: ``/Events/event_id`` chunk size (IOManager).
EVENT_ID_CHUNK = 100

_SPARSE = (("extents", "extents", 10), ("voxel_extents", "idextents", 100), ("image_meta", "meta", 100),
           ("voxels", "voxel", 1000))  # fmt: skip
_CLUSTER = (("extents", "extents", 10), ("projection_extents", "idextents", 100), ("image_meta", "meta", 100),
            ("cluster_extents", "idextents", 100), ("voxels", "voxel", 1000))  # fmt: skip
# images chunk is the number of floats of the first written entry (EventTensor::serialize): None here.
_TENSOR = (("extents", "extents", 1), ("image_extents", "idextents", 1000), ("image_meta", "meta", 1000),
           ("images", "float", None))  # fmt: skip
_PARTICLE = (("extents", "extents", 100), ("particles", "particle", 500))
_BBOX = (("extents", "extents", 1), ("image_meta", "meta", 100), ("bbox_extents", "idextents", 1),
         ("bboxes", "bbox", 1000))  # fmt: skip

#: Datasets of each product group: (name, kind, chunk size).
DATASETS = {
    "sparse2d": _SPARSE,
    "sparse3d": _SPARSE,
    "cluster2d": _CLUSTER,
    "cluster3d": _CLUSTER,
    "image2d": _TENSOR,
    "tensor1d": _TENSOR,
    "tensor3d": _TENSOR,
    "tensor4d": _TENSOR,
    "particle": _PARTICLE,
    "bbox2d": _BBOX,
    "bbox3d": _BBOX,
}


def dataset_dtype(ptype: str, kind: str) -> np.dtype:
    """Return the numpy dtype of a dataset ``kind`` of product type ``ptype``."""
    dim = PRODUCT_DIMS[ptype]
    return {
        "extents": lambda: EXTENTS_DTYPE,
        "idextents": lambda: IDEXTENTS_DTYPE,
        "meta": lambda: IMAGE_META_DTYPES[dim],
        "voxel": lambda: VOXEL_DTYPE,
        "float": lambda: np.dtype("<f4"),
        "particle": lambda: PARTICLE_DTYPE,
        "bbox": lambda: BBOX_DTYPES[dim],
    }[kind]()


def group_name(ptype: str, producer: str) -> str:
    """Return the larcv3 group name ``<type>_<producer>_group``."""
    return f"{ptype}_{producer}_group"


def parse_group_name(name: str) -> tuple[str, str] | None:
    """Split ``<type>_<producer>_group`` into (type, producer); None if it is not a product group.

    The producer may contain ``_``: the type is matched as a known prefix.
    """
    if not name.endswith("_group"):
        return None
    stem = name[: -len("_group")]
    for ptype in PRODUCT_DIMS:
        if stem.startswith(ptype + "_") and len(stem) > len(ptype) + 1:
            return ptype, stem[len(ptype) + 1 :]
    return None
