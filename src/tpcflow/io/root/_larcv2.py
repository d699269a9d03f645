"""Minimal larcv2 ``image2d`` reader with uproot (fallback until ``tpcflow.io.larcv2`` is available).

larcv2 stores ``EventImage2D`` as ``image2d_<producer>_tree/image2d_<producer>_branch`` with a
``_image_v`` vector of ``larcv::Image2D``; each image's ``_img`` is a flat ``std::vector<float>``
of ``rows * cols`` values in column-major order (larcv2 ``Image2D::index(row, col) = col * rows + row``).
"""

from __future__ import annotations

import numpy as np

from tpcflow.errors import DataFormatError, ProductNotFoundError
from tpcflow.io._extras import require
from tpcflow.io.root._source import open_root

__all__ = ["read_image2d"]


def read_image2d(path, producer: str | None = None) -> np.ndarray:
    """Read every larcv2 image2d entry of a file.

    Parameters
    ----------
    path : str or Path
        larcv2 ROOT file.
    producer : str, optional
        Producer name (``wire``, ``data``...); default: the only ``image2d_*_tree``.

    Returns
    -------
    np.ndarray
        (E, P, R, C) float32: entries, planes, rows, columns.

    Raises
    ------
    ProductNotFoundError
        If the image2d tree is missing (lists available trees).
    DataFormatError
        If the planes of an entry differ in size or a vector length is not rows*cols.
    """
    ak = require("awkward")
    f = open_root(path)
    try:
        trees = [k for k, c in f.classnames(cycle=False).items() if c == "TTree"]
        img_trees = [k for k in trees if k.startswith("image2d_") and k.endswith("_tree")]
        name = f"image2d_{producer}_tree" if producer else (img_trees[0] if len(img_trees) == 1 else None)
        if name is None or name not in trees:
            raise ProductNotFoundError(name or "image2d_<producer>_tree", available=trees, file_path=path)
        t = f[name]
        branch = name[: -len("_tree")] + "_branch"
        pre = f"{branch}/_image_v/_image_v."
        d = t.arrays([pre + "_img", pre + "_meta._row_count", pre + "_meta._col_count"], library="ak", how=dict)
    finally:
        f.close()
    rows = ak.to_numpy(ak.flatten(d[pre + "_meta._row_count"])).astype(np.int64)
    cols = ak.to_numpy(ak.flatten(d[pre + "_meta._col_count"])).astype(np.int64)
    nplanes = ak.to_numpy(ak.num(d[pre + "_img"], axis=1))
    if len(set(rows)) != 1 or len(set(cols)) != 1 or len(set(nplanes)) != 1:
        raise DataFormatError("image2d planes differ in size or count between entries", file_path=path,
                              object_path=name)
    r, c, p = int(rows[0]), int(cols[0]), int(nplanes[0])
    flat = ak.to_numpy(ak.flatten(d[pre + "_img"], axis=None)).astype(np.float32)
    if flat.size != len(nplanes) * p * r * c:
        raise DataFormatError(f"image vectors hold {flat.size} values, expected entries*planes*rows*cols",
                              file_path=path, object_path=name)
    return np.ascontiguousarray(flat.reshape(len(nplanes), p, c, r).transpose(0, 1, 3, 2))
