"""Minibatch sources for train / iotest / inference, with resumable positions.

A source yields dicts ``{"image": float32 [b,3,H,W], "label": int64 [b,3,H,W],
"event_ids": int64 (b,3), "entries": int64 (b,)}`` as numpy arrays, where ``b`` is this
rank's share of the global minibatch.  ``state_dict()`` / ``load_state_dict()`` capture the
position (epoch, batch within the epoch), so that a resumed run sees the same minibatches.

* :class:`SyntheticSource`: events in memory (``data.synthetic=true``).
* :class:`FileSource`: larcv3 files through :class:`tpcflow.loader.BatchLoader`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tpcflow.config import DataConfig
from tpcflow.errors import ConfigError, DataFormatError, ProductNotFoundError
from tpcflow.train.synthetic import EventArrays

__all__ = ["FileSource", "SyntheticSource", "check_products", "resolve_files"]


class SyntheticSource:
    """Shuffled, epoch-seeded minibatches over :class:`EventArrays` in memory.

    Parameters
    ----------
    arrays : EventArrays
    batch_size : int
        Global minibatch size; rank ``rank`` gets rows ``[rank*b, (rank+1)*b)``, ``b = batch_size // world_size``.
    shuffle : bool
        Permute the events each epoch with ``np.random.default_rng([seed, epoch])``.
    cycle : bool
        Start a new epoch when the events run out (training); otherwise stop (inference).
    """

    def __init__(self, arrays: EventArrays, batch_size: int, *, shuffle=True, seed=0, rank=0, world_size=1, cycle=True):
        if batch_size % world_size:
            raise ConfigError(f"run.minibatch_size={batch_size} must be a multiple of the {world_size} ranks")
        if cycle and batch_size > len(arrays):
            raise ConfigError(f"run.minibatch_size={batch_size} is larger than the {len(arrays)} events; raise data.synthetic_events")
        self.arrays, self.batch_size, self.shuffle, self.seed = arrays, batch_size, shuffle, seed
        self.rank, self.world_size, self.cycle = rank, world_size, cycle
        self.epoch, self.cursor = 0, 0
        self.shape = arrays.shape

    def __len__(self) -> int:
        return len(self.arrays)

    def _order(self) -> np.ndarray:
        n = len(self.arrays)
        return np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        n = len(self.arrays)
        if self.cursor >= n or (self.cycle and self.cursor + self.batch_size > n):
            if not self.cycle:
                raise StopIteration
            self.epoch, self.cursor = self.epoch + 1, 0
        chunk = self._order()[self.cursor : self.cursor + self.batch_size]
        self.cursor += self.batch_size
        per = -(-len(chunk) // self.world_size)
        mine = chunk[self.rank * per : (self.rank + 1) * per]
        image, label = self.arrays.batch(mine)
        return {"image": image, "label": label, "event_ids": self.arrays.event_ids[mine], "entries": mine.astype(np.int64)}

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def close(self) -> None:
        pass

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])


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


def check_products(files: list[Path], cfg: DataConfig) -> list:
    """Check the files hold the charge and label sparse2d products; return the charge metas.

    Raises
    ------
    ConfigError
        Naming the missing product, the file, the products present and the option to change.
    """
    from tpcflow.io import open_larcv3

    with open_larcv3(files) as reader:
        keys = [p.key for p in reader.products]
        for opt, producer in (("data.image_producer", cfg.image_producer), ("data.label_producer", cfg.label_producer)):
            key = f"sparse2d/{producer}"
            if key not in keys:
                err = ProductNotFoundError(key, available=keys, file_path=files[0])
                raise ConfigError(f"{err}\nset {opt}=<producer> to one of the sparse2d products above") from None
        if len(reader) == 0:
            raise DataFormatError("the dataset has no entries", file_path=files[0])
        key = f"sparse2d/{cfg.image_producer}"
        return [proj.meta for proj in reader.read(0, products=[key]).products[key]]


class FileSource:
    """Minibatches of larcv3 files through :class:`tpcflow.loader.BatchLoader`.

    The loader shuffles with ``seed`` and its epoch; the position is resumed with
    ``BatchLoader.set_epoch(epoch, start_batch)``, which skips the minibatches already seen in
    the current epoch without reading them.
    """

    def __init__(self, files, cfg: DataConfig, batch_size: int, *, seed=0, rank=0, world_size=1, cycle=True, shuffle=None):
        from tpcflow.loader import BatchLoader, cosmic_tagger_config

        if batch_size % world_size:
            raise ConfigError(f"run.minibatch_size={batch_size} must be a multiple of the {world_size} ranks")
        self.files = list(files)
        self.metas = check_products(self.files, cfg)
        nx, ny = self.metas[0].number_of_voxels
        k = cfg.downsample
        self.shape = (int(ny) >> k, int(nx) >> k)
        lcfg = cosmic_tagger_config(
            self.files,
            downsample=k,
            image_producer=cfg.image_producer,
            label_producer=cfg.label_producer,
            num_threads=cfg.num_threads,
        )
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
        return {"image": np.asarray(batch["image"]), "label": np.asarray(batch["label"]), "event_ids": ids, "entries": entries}

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
