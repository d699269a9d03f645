"""DataGenerator: stream ROOT TTrees as fixed-width, normalised numpy chunks.

tpcflow's version of MLaaS4HEP's ``DataGenerator`` (arXiv:1811.04492, ``workflow.py``), on
uproot 5 / awkward 2 and vectorised: jagged branches are padded from their awkward offsets
and content with numpy fancy indexing, never with a per-event Python loop.

Rows are built by :class:`tpcflow.loader.root_preprocess.Preprocessing` (row layout,
padding, normalisation: see there), the same object that travels with the trained model
to the server and to ``tpcflow root-predict``.  Identifier branches (run, event, ...) are
never features.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tpcflow.errors import ConfigError, DataFormatError
from tpcflow.io.root import BranchNotFoundError, Specs, flat_numpy, jagged_parts, load_specs, merge_specs, open_reader
from tpcflow.loader.root_preprocess import DEFAULT_IDENTIFIERS, Preprocessing, cap_jdim

__all__ = ["Chunk", "DataGenerator", "pad_jagged", "read_file_list"]

_SUBSETS = ("train", "validation", "all")


@dataclass
class Chunk:
    """One chunk of events.

    Attributes
    ----------
    x : (N, W) float32
        Padded, normalised features (``W = specs.width``).
    mask : (N, W) bool
        True where ``x`` holds a real, finite value.
    y : (N,) int64 or float32, or None
        Labels (per-file labels or the label branch); None when the generator has no labels.
    file : (N,) int32
        Index of the source file in ``generator.files``.
    entry : (N,) int64
        Entry of each event in its file.
    """

    x: np.ndarray
    mask: np.ndarray
    y: np.ndarray | None
    file: np.ndarray
    entry: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


def pad_jagged(array, jdim: int, pad_value: float = 0.0, dtype=np.float32, *, out=None, out_mask=None):
    """Pad a one-level jagged array to ``jdim`` columns (longer lists are clipped).

    Parameters
    ----------
    array : ak.Array
        ``N * var * number``.
    jdim : int
        Output width.
    out, out_mask : (N, jdim) arrays, optional
        Write into these (may be column slices of a larger matrix) instead of allocating.

    Returns
    -------
    values : (N, jdim) ``dtype``
    mask : (N, jdim) bool, True for real values

    Notes
    -----
    Same result as ``ak.to_numpy(ak.fill_none(ak.pad_none(array, jdim, clip=True), pad_value))``
    but about 15x faster on NanoAOD (one boolean scatter per branch from the offsets).
    """
    offsets, content = jagged_parts(array)
    n = len(offsets) - 1
    counts = np.diff(offsets)
    if out is None:
        out = np.empty((n, jdim), dtype=dtype)
        out_mask = np.empty((n, jdim), dtype=bool)
    out[...] = pad_value
    if jdim == 0 or n == 0:
        out_mask[...] = False
        return out, out_mask
    np.less(np.arange(jdim), counts[:, None], out=out_mask)
    values = content[offsets[0]:offsets[-1]]
    if counts.max(initial=0) > jdim:  # clip: keep the first jdim values of each list
        local = np.arange(len(values)) - np.repeat(offsets[:-1] - offsets[0], counts)
        values = values[local < jdim]
    out[out_mask] = values
    return out, out_mask


def read_file_list(path) -> tuple[list[str], list[int] | None]:
    """Read a ``files.txt``: one file or URL per line, optionally followed by an integer label.

    Blank lines and ``#`` comments are ignored.  Returns ``(files, labels or None)``.

    Raises
    ------
    DataFormatError
        If the list cannot be read or is empty, only some lines carry a label, or a label is
        not an integer.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise DataFormatError(f"cannot read the file list: {err.strerror or err}", file_path=path) from err
    files, labels = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        files.append(parts[0])
        if len(parts) > 1:
            try:
                labels.append(int(parts[1]))
            except ValueError as err:
                raise DataFormatError(f"label {parts[1]!r} is not an integer", file_path=path,
                                      entry=lineno) from err
    if not files:
        raise DataFormatError("the file list names no file", file_path=path)
    if labels and len(labels) != len(files):
        raise DataFormatError("either every line or no line of a file list must carry a label", file_path=path)
    return files, (labels or None)


class DataGenerator:
    """Stream padded, normalised chunks from one or more ROOT files.

    Parameters
    ----------
    files : sequence of str or Path
        Local paths, HTTP(S) or ``root://`` URLs, all with the same tree; or Parquet files
        (``.parquet``, columns as branches: :class:`tpcflow.io.root.ParquetReader`).
    labels : sequence of int, str or None
        Per-file labels (one per file), the name of a flat branch holding the label (it is
        then not a feature), or None (``chunk.y`` is None).
    specs : Specs, str or Path, optional
        Specs (or a specs JSON path) to use; default: run the first pass on every file and
        merge.  Every branch in the specs must exist in every file.
    tree, include, exclude, on_unreadable, retries
        Passed to :class:`tpcflow.io.root.DataReader`.
    nevts : int or sequence of int, optional
        Use at most this many entries of each file (one value for all, or one per file).
    chunk_size : int
        Events per chunk over all files together (default 1000).  Each chunk takes from every
        file a share proportional to the file's size, so files are mixed in proportion.
    pad_value : float
        Value of padded slots and non-finite values, after normalisation (default 0).
    normalise : bool
        Min/max normalise with the specs' ranges (default True).
    shuffle : bool
        Shuffle chunk order and events within a chunk, reseeded every epoch (default True).
    seed : int
        Seed of shuffling and of the train/validation split.
    validation_split : float
        Fraction of each file's events put in the validation subset, chosen at random once
        (seeded) and fixed across epochs (default 0).
    identifiers : sequence of str
        Identifier branches, never features (default
        :data:`~tpcflow.loader.root_preprocess.DEFAULT_IDENTIFIERS`; ``()`` to use them).
    jdim : int or dict of str to int, optional
        Cap on the width of jagged branches, for all or per branch; longer events are truncated
        and counted in ``preprocessing.truncated`` (once each: in the first epoch's training
        chunks, read in this process).
    max_chunk_bytes : int
        Most memory the rows of one chunk may take (default 1 GiB); a larger ``chunk_size``
        is refused before anything is read (:meth:`Preprocessing.check_chunk`).

    Raises
    ------
    ConfigError
        On inconsistent options (labels length, split outside [0, 1), bad subset).
    BranchNotFoundError, UnreadableBranchError, DataFormatError, RemoteSourceError
        From the readers, naming the file and branch.
    """

    def __init__(self, files: Sequence, *, labels=None, specs=None, tree: str | None = None, include=None,
                 exclude=None, nevts=None, chunk_size: int = 1000, pad_value: float = 0.0,
                 normalise: bool = True, shuffle: bool = True, seed: int = 0, validation_split: float = 0.0,
                 on_unreadable: str = "raise", retries: int = 3, identifiers=DEFAULT_IDENTIFIERS, jdim=None,
                 max_chunk_bytes: int = 1 << 30):
        files = [str(f) for f in files]
        if not files:
            raise ConfigError("DataGenerator needs at least one file")
        if chunk_size <= 0:
            raise ConfigError(f"chunk_size must be > 0, but got chunk_size={chunk_size}")
        if not 0.0 <= validation_split < 1.0:
            raise ConfigError(f"validation_split must be in [0, 1), but got validation_split={validation_split}")
        self.label_branch = labels if isinstance(labels, str) else None
        if labels is not None and self.label_branch is None:
            labels = [int(v) for v in labels]
            if len(labels) != len(files):
                raise ConfigError(f"got {len(labels)} labels for {len(files)} files; give one label per file")
        self.file_labels = None if self.label_branch else labels
        self.identifiers = [str(i) for i in identifiers]
        exclude = list(exclude or []) + ([self.label_branch] if self.label_branch else []) + self.identifiers
        self.files = files
        per_file = list(nevts) if isinstance(nevts, Sequence) else [nevts] * len(files)
        if len(per_file) != len(files):
            raise ConfigError(f"got {len(per_file)} nevts values for {len(files)} files")
        self.readers = [open_reader(f, tree=tree, include=include, exclude=exclude, nevts=n,
                                   on_unreadable=on_unreadable, retries=retries) for f, n in zip(files, per_file)]
        if specs is None:
            specs = merge_specs([r.first_pass() for r in self.readers])
        elif not isinstance(specs, Specs):
            specs = load_specs(specs)
        ids = [b for b in self.identifiers if b in specs.branches]
        if ids:  # specs of a first pass that kept them (DataReader alone, older runs): identifiers are never features
            specs = Specs(tree=specs.tree, files=list(specs.files), nevents=specs.nevents,
                          branches={k: v for k, v in specs.branches.items() if k not in ids}, skipped=dict(specs.skipped))
        specs = cap_jdim(specs, jdim)
        self.specs = specs
        self.branches = [name for name, _, _ in specs.layout()]
        for r in self.readers:
            missing = [b for b in self.branches if b not in r.branches]
            if missing:
                raise DataFormatError(
                    f"{len(missing)} branch(es) of the specs are not selected in this file, e.g. {missing[:3]}; "
                    "all files must share the branches: narrow the selection with include/exclude",
                    file_path=r.source, object_path=r.tree_name)
            if self.label_branch and self.label_branch not in r.all_branches():
                raise BranchNotFoundError(self.label_branch, available=r.all_branches(), file_path=r.source,
                                          object_path=r.tree_name,
                                          hint="the label branch (CLI: --labels) is not in the tree: fix its spelling")
            if self.label_branch and r.is_jagged(self.label_branch):
                raise DataFormatError("the label branch holds a list per event; labels need one number per event",
                                      file_path=r.source, object_path=r.tree_name, field=self.label_branch)
        self.chunk_size = int(chunk_size)
        self.pad_value = float(pad_value)
        self.normalise = bool(normalise)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.validation_split = float(validation_split)
        self.epoch = 0
        self.sizes = np.array([r.num_entries for r in self.readers], dtype=np.int64)
        self.nchunks = max(1, math.ceil(int(self.sizes.sum()) / self.chunk_size))
        self._is_val = [np.random.default_rng([self.seed, i]).random(int(n)) < self.validation_split
                        for i, n in enumerate(self.sizes)]
        present = set(self.readers[0].all_branches())
        self.preprocessing = Preprocessing(specs, normalise=self.normalise, pad_value=self.pad_value,
                                           identifiers=[i for i in self.identifiers if i in present])
        self.preprocessing.check_chunk(self.chunk_size, max_chunk_bytes)

    # ------------------------------------------------------------------ sizes
    @property
    def width(self) -> int:
        """Columns per row (``specs.width``): the model's input dimension."""
        return self.specs.width

    @property
    def columns(self) -> list[str]:
        """Column names (``branch`` or ``branch[i]``)."""
        return self.specs.columns()

    def __len__(self) -> int:
        """Number of chunks per epoch."""
        return self.nchunks

    def nevents(self, subset: str = "all") -> int:
        """Events in ``subset`` ("train", "validation" or "all")."""
        self._check_subset(subset)
        if subset == "all":
            return int(self.sizes.sum())
        n_val = sum(int(v.sum()) for v in self._is_val)
        return n_val if subset == "validation" else int(self.sizes.sum()) - n_val

    @staticmethod
    def _check_subset(subset: str) -> None:
        if subset not in _SUBSETS:
            raise ConfigError(f"subset must be one of {_SUBSETS}, but got subset={subset!r}")

    # ------------------------------------------------------------------ chunks
    def chunk_order(self, epoch: int = 0) -> np.ndarray:
        """Order in which chunks are visited in ``epoch`` (a permutation when shuffling)."""
        if not self.shuffle:
            return np.arange(self.nchunks)
        return np.random.default_rng([self.seed, epoch, 1]).permutation(self.nchunks)

    def chunk(self, k: int, subset: str = "train", epoch: int = 0) -> Chunk:
        """Build chunk ``k`` (0 <= k < len(self)) of ``subset``.

        File ``i`` contributes its entries ``[floor(k n_i / K), floor((k+1) n_i / K))`` so every
        chunk mixes the files in proportion to their sizes and every event appears exactly once
        per epoch.
        """
        self._check_subset(subset)
        if not 0 <= k < self.nchunks:
            raise IndexError(f"chunk {k} out of range [0, {self.nchunks})")
        xs, ms, ys, fs, es = [], [], [], [], []
        for i, r in enumerate(self.readers):
            n = int(self.sizes[i])
            start, stop = (k * n) // self.nchunks, ((k + 1) * n) // self.nchunks
            if stop <= start:
                continue
            x, m, y = self._read_block(i, start, stop, count=epoch == 0 and subset == "train")
            entry = np.arange(start, stop, dtype=np.int64)
            if subset != "all":
                keep = self._is_val[i][start:stop] == (subset == "validation")
                x, m, entry = x[keep], m[keep], entry[keep]
                y = None if y is None else y[keep]
            xs.append(x), ms.append(m), ys.append(y), es.append(entry)
            fs.append(np.full(len(entry), i, dtype=np.int32))
        if not xs:
            empty = np.empty((0, self.width), np.float32)
            return Chunk(empty, empty.astype(bool), None if self._no_labels else np.empty(0),
                         np.empty(0, np.int32), np.empty(0, np.int64))
        x, m = np.concatenate(xs), np.concatenate(ms)
        y = None if self._no_labels else np.concatenate(ys)
        f, e = np.concatenate(fs), np.concatenate(es)
        if self.shuffle:
            p = np.random.default_rng([self.seed, epoch, 2, k]).permutation(len(x))
            x, m, f, e = x[p], m[p], f[p], e[p]
            y = None if y is None else y[p]
        return Chunk(x, m, y, f, e)

    @property
    def _no_labels(self) -> bool:
        return self.file_labels is None and self.label_branch is None

    def _read_block(self, i: int, start: int, stop: int, count: bool = False):
        r = self.readers[i]
        names = self.branches + ([self.label_branch] if self.label_branch else [])
        arrays = r.read(start, stop, names)
        n = stop - start
        x, m = self.preprocessing.transform(self.preprocessing.raw_rows(arrays, count=count), copy=False)
        y = None
        if self.file_labels is not None:
            y = np.full(n, self.file_labels[i], dtype=np.int64)
        elif self.label_branch:
            y = flat_numpy(arrays[self.label_branch])
            if y.ndim != 1:
                raise DataFormatError(f"label branch must hold one number per event, got shape {y.shape}",
                                      file_path=r.source, object_path=r.tree_name, field=self.label_branch)
            y = y.astype(np.int64) if y.dtype.kind in "biu" else y.astype(np.float32)
        return x, m, y

    def iterate(self, subset: str = "train", epoch: int | None = None) -> Iterator[Chunk]:
        """Yield the chunks of ``subset`` for ``epoch`` (default: the current epoch)."""
        epoch = self.epoch if epoch is None else epoch
        for k in self.chunk_order(epoch):
            c = self.chunk(int(k), subset, epoch)
            if len(c):
                yield c

    def __iter__(self) -> Iterator[Chunk]:
        """Yield the training chunks of the current epoch, then advance the epoch."""
        yield from self.iterate("train", self.epoch)
        self.epoch += 1

    def close(self) -> None:
        """Close every file."""
        for r in self.readers:
            r.close()
