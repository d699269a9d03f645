"""The fill loop run by each worker (a process, or a thread with ``WorkerType: thread``).

A worker opens its own reader, maps the storage file, then takes :class:`FillTask` messages
``(slot, seq, generation, entries, tag)`` from the task queue until it gets ``None`` or its
parent dies.  For each task it reads the entries (voxel blocks for sparse fillers, grouped
into runs of consecutive entries; Event objects otherwise), fills every batch of the slot
in place, and answers ``("done", ...)`` or ``("error", ...)`` with a picklable description
of the failure that names the file and entry.
"""

from __future__ import annotations

import os
import signal
import traceback
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from tpcflow.errors import DataFormatError
from tpcflow.loader.fillers import PositionError

__all__ = ["BatchFillError", "FillSpec", "FillTask", "augment_flips", "fill_slot", "read_events", "read_sparse",
           "worker_main"]


class FillTask(NamedTuple):
    """One task of the queue: fill storage ``slot`` with ``entries``.

    Attributes
    ----------
    slot : int
        Storage slot to fill.
    seq : int
        Dispatch sequence number (the consumer takes batches in this order).
    generation : int
        Plan generation; a result of an older generation is discarded.
    entries : (B,) int64
        Global entries of the minibatch.
    tag : (epoch, batch index)
        Seeds the augmentation of this batch.
    """

    slot: int
    seq: int
    generation: int
    entries: np.ndarray
    tag: tuple


class BatchFillError(DataFormatError):
    """Filling a minibatch failed in a worker.  Names the file, the entry and the worker.

    Attributes
    ----------
    global_entry : int or None
        Entry in the whole (multi-file) dataset; ``entry`` is the entry within ``file_path``.
    worker_traceback : str
        The traceback in the worker.
    """

    def __init__(self, what, *, file_path=None, entry=None, global_entry=None, worker_traceback=""):
        self.global_entry = global_entry
        self.worker_traceback = worker_traceback
        super().__init__(what, file_path=file_path, entry=entry)

    def __reduce__(self):
        return (
            _rebuild_error,
            (self.what, self.file_path, self.entry, self.global_entry, self.worker_traceback),
        )

    def __str__(self):
        s = super().__str__()
        if self.global_entry is not None and self.global_entry != self.entry:
            s += f" (dataset entry {self.global_entry})"
        return s


def _rebuild_error(what, file_path, entry, global_entry, tb):
    return BatchFillError(what, file_path=file_path, entry=entry, global_entry=global_entry, worker_traceback=tb)


@dataclass
class FillSpec:
    """Everything a worker needs to rebuild the fillers and map the storage (picklable)."""

    files: list
    fillers: list  # FillerConfig
    bound: list  # (products dict, metas) per filler
    layout: object  # SlotLayout
    path: str
    seed: int = 0  # RandomSeed, for Augment flips


class _PositionError(Exception):
    def __init__(self, position: int, err: BaseException):
        self.position, self.err = position, err


def _runs(sorted_uniq: np.ndarray):
    if len(sorted_uniq) == 0:
        return []
    cuts = np.flatnonzero(np.diff(sorted_uniq) != 1) + 1
    return [(int(r[0]), int(r[-1]) + 1) for r in np.split(sorted_uniq, cuts)]


def read_sparse(reader, key: str, entries: np.ndarray, n_proj: int = 0):
    """Voxels of ``key`` for ``entries`` in batch order: (index (M,), values (M,), counts (B, P)).

    Consecutive entries are read with one ``read_sparse_block`` call (vectorised); repeated
    entries are read once.  ``counts`` has at least ``n_proj`` columns (missing projections
    count 0).
    """
    uniq, inv = np.unique(entries, return_inverse=True)
    blocks = [reader.read_sparse_block(key, a, b) for a, b in _runs(uniq)]
    index = np.concatenate([bl.index for bl in blocks])
    values = np.concatenate([bl.values for bl in blocks])
    width = max(n_proj, max(bl.counts.shape[1] for bl in blocks))
    counts = np.concatenate(
        [np.pad(np.asarray(bl.counts, dtype=np.int64), ((0, 0), (0, width - bl.counts.shape[1]))) for bl in blocks],
        axis=0,
    )
    if len(uniq) == len(entries) and np.array_equal(uniq, entries):
        return index, values, counts
    tot = counts.sum(axis=1)
    starts = np.concatenate([[0], np.cumsum(tot)[:-1]])
    lens = tot[inv]
    out_starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    gather = np.repeat(starts[inv] - out_starts, lens) + np.arange(int(lens.sum()), dtype=np.int64)
    return index[gather], values[gather], counts[inv]


def read_events(reader, keys: list[str], entries: np.ndarray):
    """Event objects (only ``keys``) for ``entries`` in batch order."""
    uniq, inv = np.unique(entries, return_inverse=True)
    evs = []
    for a, b in _runs(uniq):
        evs.extend(reader.read_range(a, b, products=keys) if b - a > 1 else [reader.read(a, products=keys)])
    return [evs[i] for i in inv]


def _locate_failure(reader, fillers, entries, err):
    """Find the entry that makes the fill fail: by position, by re-reading one entry at a
    time, or from the error's own ``entry`` (a global entry set by event-based fillers)."""
    if isinstance(err, _PositionError):
        return int(entries[err.position]), err.err
    for e in np.unique(entries):
        one = np.array([e])
        try:
            for f in fillers:
                if f.source == "sparse":
                    read_sparse(reader, f.key, one)
                else:
                    read_events(reader, [f.key], one)
        except Exception as inner:  # noqa: BLE001 - reported to the consumer
            return int(e), inner
    g = getattr(err, "entry", None)
    if g is not None and int(g) in set(int(e) for e in entries):
        return int(g), err
    return None, err


def augment_flips(fillers, seed: int, tag, n: int):
    """(n, 3) bool axis flips of one minibatch, or None if no filler has ``Augment: true``.

    Drawn from ``(RandomSeed, epoch, batch index)``, so every filler of the slot (image and
    label) mirrors the same entries the same way, and a rerun gives the same flips.
    """
    if not any(getattr(f, "augment", False) for f in fillers):
        return None
    epoch, index = tag if isinstance(tag, tuple) else (0, 0)
    rng = np.random.default_rng([abs(int(seed)), abs(int(epoch)), abs(int(index))])
    return rng.random((n, 3)) < 0.5


def fill_slot(reader, fillers, view, entries: np.ndarray, flips=None) -> None:
    """Fill every batch of one slot with ``entries`` (global entry numbers, batch order).

    ``flips`` (B, 3) bool mirrors voxel axes for fillers with ``Augment: true``.
    """
    n = len(entries)
    arrays = view.arrays
    arrays["_n"][0] = n
    arrays["_entries"][:n] = entries
    arrays["_event_ids"][:n] = np.asarray(reader.event_ids)[entries]
    for k, f in enumerate(fillers):
        out = arrays[f.name]
        if f.tracks_dirty:
            view.clear(f.name)
            view.record_dirty(f.name, None)  # until this fill succeeds: clear it all next time
        elif not f.variable:
            out[:n].fill(f.fill_value)
        data = read_sparse(reader, f.key, entries, len(f.metas)) if f.source == "sparse" else read_events(reader, [f.key], entries)
        try:
            res = f.fill(out if f.variable else out[:n], data, n, flips=flips)
        except PositionError as err:
            raise _PositionError(err.position, err) from err
        if f.tracks_dirty:
            view.record_dirty(f.name, res)
        arrays["_rows"][k] = res if f.variable else n


def describe_error(reader, fillers, entries, err) -> BatchFillError:
    """Turn a fill failure into a BatchFillError naming file and entry."""
    g, cause = _locate_failure(reader, fillers, entries, err)
    file_path, local = None, None
    if g is not None:
        try:
            file_path, local = reader.locate(g)
        except Exception:  # noqa: BLE001 - best effort
            file_path, local = None, g
    file_path = getattr(cause, "file_path", None) or file_path
    what = f"{type(cause).__name__}: {getattr(cause, 'what', None) or cause}"
    tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    return BatchFillError(
        f"filling a minibatch failed: {what}", file_path=file_path, entry=local, global_entry=g, worker_traceback=tb
    )


def build_fillers(spec: FillSpec):
    from tpcflow.loader.fillers import make_filler

    fillers = []
    for fc, (products, metas) in zip(spec.fillers, spec.bound):
        f = make_filler(fc.name, fc.process_type, fc.params)
        f.bind(products, metas)
        fillers.append(f)
    return fillers


def _parent_alive() -> bool:
    import multiprocessing as mp

    parent = mp.parent_process()
    return parent is None or parent.is_alive()


def worker_main(wid: int, spec: FillSpec, task_q, result_q, mm=None, is_thread: bool = False) -> None:
    """Run the fill loop until a ``None`` task, or until the parent process dies."""
    import queue

    from tpcflow.io import open_larcv3
    from tpcflow.loader.storage import SlotView, map_file

    if not is_thread:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the consumer decides when to stop
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        # the workers are the parallelism: no extra inflate threads in the reader of each one
        os.environ.setdefault("TPCFLOW_IO_THREADS", "1")
    try:
        fillers = build_fillers(spec)
        reader = open_larcv3(spec.files, products=[f.key for f in fillers])
        if mm is None:
            mm = map_file(spec.path, spec.layout)
        views = [SlotView(mm, spec.layout, s) for s in range(spec.layout.num_storage)]
    except BaseException as err:  # noqa: BLE001 - reported to the consumer
        tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        result_q.put(("fatal", wid, BatchFillError(f"worker {wid} failed to start: {err}", worker_traceback=tb)))
        return
    result_q.put(("ready", wid, None))
    while True:
        try:
            task = task_q.get(timeout=0.5)
        except queue.Empty:
            if not is_thread and not _parent_alive():
                break
            continue
        if task is None:
            break
        slot, seq, gen, entries, tag = task
        try:
            fill_slot(reader, fillers, views[slot], entries, flips=augment_flips(fillers, spec.seed, tag, len(entries)))
        except Exception as err:  # noqa: BLE001 - reported to the consumer
            result_q.put(("error", wid, (slot, seq, gen, describe_error(reader, fillers, entries, err))))
            continue
        result_q.put(("done", wid, (slot, seq, gen)))
    reader.close()
