"""Entries of larcv1/larcv2 ROOT image2d trees as sparse events, for ``tpcflow submit``.

The reading itself is :mod:`tpcflow.io.larcv_root`; this adapter gives it the reader interface
of :class:`~tpcflow.io.larcv3.Larcv3Reader` that the request path uses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tpcflow.errors import DataFormatError
from tpcflow.io.larcv_root import Image2DEntry, image2d_version, iterate_image2d, open_root_file, product_tree
from tpcflow.io.products import DenseImage, Event, EventID

__all__ = ["RootImageReader"]


class RootImageReader:
    """Entries of larcv1/larcv2 ``image2d_<producer>_tree`` in one or more files, as sparse events.

    The interface of :class:`~tpcflow.io.larcv3.Larcv3Reader` that ``tpcflow submit`` uses
    (``files``, ``len``, ``read(entry)``, ``locate(entry)``, ``close``), so that ROOT images go
    through the same request path as larcv3 files.  Each image becomes a
    :class:`~tpcflow.io.products.SparseProjection` of its non-zero pixels under the key
    ``image2d/<producer>``: ``index = row * cols + col`` (row-major over ``number_of_voxels =
    (rows, cols)``), float32 values.  Entries are streamed: reading them in increasing order
    reads each basket once; a jump backwards restarts the stream there.

    Parameters
    ----------
    paths : path or list of paths
    producers : str or list of str
        One or more image2d producers, read entry by entry side by side.
    tick_backward : bool
        As :func:`iterate_image2d`.

    Raises
    ------
    DataFormatError, ProductNotFoundError
        As :func:`iterate_image2d`, when the reader is made (every file is checked for the trees);
        also trees of one file with different entry counts.
    """

    def __init__(self, paths, producers="wire", *, tick_backward: bool = False):
        self.paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
        self.producers = [producers] if isinstance(producers, str) else list(producers)
        self.keys = [f"image2d/{p}" for p in self.producers]
        self.tick_backward = tick_backward
        counts = []
        for path in self.paths:
            with open_root_file(path) as f:
                n = set()
                for producer in self.producers:
                    tree, _ = product_tree(f, path, "image2d", producer)
                    image2d_version(tree)
                    n.add(int(tree.num_entries))
            if len(n) != 1:
                raise DataFormatError(f"image2d trees {self.producers} have different entry counts {sorted(n)}",
                                      file_path=path)
            counts.append(n.pop())
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._streams: dict[str, tuple] = {}  # producer -> (file index, next local entry, iterator)

    @property
    def files(self) -> list[Path]:
        return list(self.paths)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def locate(self, entry: int) -> tuple[Path, int]:
        """(file, entry in that file) of a global entry."""
        if not 0 <= entry < len(self):
            raise DataFormatError(f"entry {entry} is out of range: the dataset has {len(self)} entries",
                                  file_path=self.paths[0] if self.paths else None, entry=entry)
        k = int(np.searchsorted(self._offsets, entry, side="right") - 1)
        return self.paths[k], int(entry - self._offsets[k])

    def _next(self, producer: str, k: int, local: int) -> Image2DEntry:
        stream = self._streams.get(producer)
        if stream is None or stream[0] != k or stream[1] != local:
            it = iterate_image2d(self.paths[k], producer, entry_start=local, tick_backward=self.tick_backward)
            stream = (k, local, it)
        e = next(stream[2])
        self._streams[producer] = (k, local + 1, stream[2])
        return e

    def read(self, entry: int, products=None):
        """The :class:`~tpcflow.io.products.Event` of ``entry`` with each ``image2d/<producer>`` as sparse projections."""
        path, local = self.locate(entry)
        k = self.paths.index(path)
        found, event_id = {}, None
        for producer, key in zip(self.producers, self.keys):
            if products is not None and key not in products:
                continue
            e = self._next(producer, k, local)
            event_id = e.event_id
            found[key] = [DenseImage(meta, image).to_sparse() for image, meta in zip(e.images, e.metas, strict=True)]
        return Event(event_id=EventID(*(event_id or (-1, -1, -1))), products=found, entry=entry)

    def close(self) -> None:
        self._streams.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
