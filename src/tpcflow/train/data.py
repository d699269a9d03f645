"""Minibatch sources for train / iotest / inference, with resumable positions.

A source yields dicts ``{"image": float32 [b,3,H,W], "label": int64 [b,3,H,W],
"event_ids": int64 (b,3), "entries": int64 (b,)}`` as numpy arrays (no ``"label"`` when the
source reads no labels), where ``b`` is this rank's share of the global minibatch.  A sparse
source (for the sparse network) yields ``{"voxels": SparseMinibatch, "event_ids", "entries"}``
instead: the same pixels, never densified (:meth:`~tpcflow.models.sparse.SparseMinibatch.from_coo`).
``state_dict()`` / ``load_state_dict()`` capture the position (epoch, batch within the epoch),
so that a resumed run sees the same minibatches.

* :class:`Source`: the protocol every consumer takes.
* :class:`FileSource`: larcv3 files through :class:`tpcflow.loader.BatchLoader`; synthetic events
  (``data.synthetic=true``) are written to a file first (:func:`synthetic_file`) and read the same way.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np

from tpcflow.config import DataConfig
from tpcflow.errors import ConfigError, DataFormatError, ProductNotFoundError

__all__ = ["FileSource", "Source", "check_products", "resolve_files", "synthetic_file"]


class Source(Protocol):
    """What train, iotest and inference take minibatches from (:class:`FileSource` implements it).

    Attributes
    ----------
    shape : (H, W)
        Image size per plane, CosmicTagger layout, after down-sampling.
    metas : list of ImageMeta
        The charge product's metas of the first entry (one per plane), at the file's resolution.
    """

    shape: tuple[int, int]
    metas: list

    def __len__(self) -> int: ...
    def __iter__(self): ...
    def __next__(self) -> dict: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...
    def close(self) -> None: ...


def synthetic_file(directory: str | Path, n: int, seed: int, downsample: int) -> Path:
    """The larcv3 file of ``n`` synthetic SBND events (:func:`tpcflow.sim.sbnd.generate_file`), made once.

    Synthetic data goes through the same loader as users' files: the events are written once to
    ``<directory>/synthetic-n<n>-seed<seed>-ds<downsample>.h5`` (atomically; a later run with the
    same settings reuses the file) and read back like any larcv3 file.
    """
    from tpcflow.sim.sbnd import generate_file

    path = Path(directory) / f"synthetic-n{n}-seed{seed}-ds{downsample}.h5"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        generate_file(path, n, seed, downsample=downsample)
    return path


def resolve_files(spec: str, data_directory: str = "", *, what: str = "data.file") -> list[Path]:
    """Split a comma-separated file list, prefix ``data_directory``, and check the files exist.

    Relative paths that do not exist are also looked up under ``$TPCFLOW_DATA``.

    Raises
    ------
    ConfigError
        If the list is empty or a file does not exist.
    """
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ConfigError(f"{what} is empty: set {what}=FILE.h5 (or data.synthetic=true)")
    out = []
    for name in names:
        p = Path(data_directory) / name if data_directory else Path(name)
        if not p.exists() and not p.is_absolute() and os.environ.get("TPCFLOW_DATA"):
            alt = Path(os.environ["TPCFLOW_DATA"]) / name
            p = alt if alt.exists() else p
        if not p.exists():
            raise ConfigError(f"{what}: file {str(p)!r} does not exist")
        out.append(p)
    return out


def check_products(files: list[Path], cfg: DataConfig, *, labels: bool | None = True) -> tuple[list, bool]:
    """Check the files hold the charge and label sparse2d products; return the charge metas and whether labels are read.

    ``labels``: True requires the label product, False ignores it, None reads it when the files
    have it (inference on unlabelled data).

    Raises
    ------
    ConfigError
        Naming the missing product, the file, the products present and the option to change.
    """
    from tpcflow.io import open_larcv3

    image_key, label_key = f"sparse2d/{cfg.image_producer}", f"sparse2d/{cfg.label_producer}"
    if labels is None:  # labels when every file has them
        have = []
        for f in files:
            with open_larcv3(f) as r:
                have.append(label_key in [p.key for p in r.products])
        labels = all(have)
        if any(have) and not labels:
            warnings.warn(f"{label_key} is in {sum(have)} of {len(files)} files: read without labels, no metrics",
                          UserWarning, stacklevel=3)
    wanted = {image_key: "data.image_producer", **({label_key: "data.label_producer"} if labels else {})}
    try:
        reader = open_larcv3(files, products=list(wanted))  # only these must be in every file
    except ProductNotFoundError as err:
        raise ConfigError(f"{err}\nset {wanted[err.product]}=<producer> to one of the sparse2d products above") \
            from None
    with reader:
        if len(reader) == 0:
            raise DataFormatError("the dataset has no entries", file_path=files[0])
        return [proj.meta for proj in reader.read(0, products=[image_key]).products[image_key]], labels


class FileSource:
    """Minibatches of larcv3 files through :class:`tpcflow.loader.BatchLoader`.

    The loader shuffles with ``seed`` and its epoch; the position is resumed with
    ``BatchLoader.set_epoch(epoch, start_batch)``, which skips the minibatches already seen in
    the current epoch without reading them.
    """

    def __init__(self, files, cfg: DataConfig, batch_size: int, *, seed=0, rank=0, world_size=1, cycle=True,
                 shuffle=None, labels: bool | None = True, sparse: bool = False):
        from tpcflow.io import open_larcv3
        from tpcflow.loader import BatchLoader, cosmic_tagger_config

        if batch_size % world_size:
            raise ConfigError(f"run.minibatch_size={batch_size} must be a multiple of the {world_size} ranks")
        self.files = list(files)
        self.data = cfg
        self.metas, self.labels = check_products(self.files, cfg, labels=labels)
        nx, ny = self.metas[0].number_of_voxels
        k = cfg.downsample
        self.shape = (int(ny) >> k, int(nx) >> k)
        self.sparse = sparse
        max_voxels = None
        if sparse:  # COO rows: room for the most voxels a plane of these files holds
            keys = [f"sparse2d/{cfg.image_producer}"] + ([f"sparse2d/{cfg.label_producer}"] if self.labels else [])
            with open_larcv3(self.files, products=keys) as reader:
                max_voxels = max(reader.max_voxels(key) for key in keys)
        lcfg = cosmic_tagger_config(
            self.files,
            downsample=k,
            image_producer=cfg.image_producer,
            label_producer=cfg.label_producer if self.labels else None,
            num_threads=cfg.num_threads,
            max_voxels=max_voxels,
        )
        self.n_planes = len(lcfg["ThreadProcessor"]["ProcessList"]["image"]["Channels"])
        self.cycle = cycle
        self.loader = BatchLoader(
            lcfg,
            batch_size // world_size,
            rank=rank,
            world_size=world_size,
            shuffle=(cfg.shuffle if shuffle is None else shuffle),
            drop_last=cycle,
            seed=seed,
            # NOTE [zero copy]: batches are views of the loader's shared-memory slot, valid until the
            # next minibatch is taken.  train, evaluate and inference use a batch wholly (forward,
            # backward, outputs written as copies) before they call next(), so no copy is needed.
            copy=False,
        )
        self.epoch, self.batch_in_epoch = 0, 0
        self._it = None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        while True:
            if self._it is None:
                self._it = iter(self.loader)
            try:
                batch = next(self._it)
                break
            except StopIteration:
                self._it = None
                if not self.cycle:
                    raise
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        self.batch_in_epoch += 1
        ids = np.asarray(self.loader.last_event_ids, dtype=np.int64).reshape(-1, 3)
        entries = np.asarray(getattr(self.loader, "last_entries", np.full(len(ids), -1)), dtype=np.int64)
        if self.sparse:
            from tpcflow.models.sparse.minibatch import SparseMinibatch

            voxels = SparseMinibatch.from_coo(batch["image"], batch["label"] if self.labels else None, len(ids),
                                              self.n_planes, self.shape)
            return {"voxels": voxels, "event_ids": ids, "entries": entries}
        out = {"image": np.asarray(batch["image"]), "event_ids": ids, "entries": entries}
        if self.labels:
            out["label"] = np.asarray(batch["label"])
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}

    def load_state_dict(self, state: dict) -> None:
        target_epoch, target_batch = int(state["epoch"]), int(state["batch_in_epoch"])
        self.close()
        # the loader skips the batches already seen in this epoch without reading them
        self.loader.set_epoch(target_epoch, target_batch)
        self.epoch, self.batch_in_epoch = target_epoch, target_batch

    def close(self) -> None:
        """Stop the loader's workers."""
        self._it = None
        self.loader.close()
