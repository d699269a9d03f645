"""ThreadProcessor: a circular buffer of minibatches filled in the background (larcv API).

Design
------
``NumStorage`` slots live in one shared memory-mapped file (:mod:`.storage`); each slot holds
one batch per batch filler.  ``NumThreads`` workers take (slot, entries) tasks from a
queue, open their own larcv3 reader, and fill the slot in place; the consumer gets numpy
views of the slot, with no copy.  Slot states follow larcv's ``BatchDataState_t``:
EMPTY -> FILLING -> FILLED -> (consumer) RELEASED -> FILLING ...

Why processes, not threads
--------------------------
h5py serialises every call under one global lock ("phil"); the decompression of chunks
read through h5py runs inside those calls, and part of the fill runs Python code under
the GIL.  Threads therefore cannot be relied on to fill two minibatches at once;
processes can, each with its own reader, writing into shared memory with no copy and no
pickling of batches.  ``benchmarks/bench_loader.py`` measures both (its figures are in the
benchmark's output and the notes of the issues, not here).
Workers are processes (``WorkerType: process``, the default; ``thread`` is kept for the
measurement and for debugging; ``NumThreads: 0`` fills in the caller).  Start method:
``forkserver`` where available (safe with torch and with open h5py handles in the parent;
the server preloads numpy, h5py and tpcflow.io, so a worker starts in ~0.1 s), else
``spawn``.  As with torch's DataLoader under spawn, a script that starts workers needs the
``if __name__ == "__main__":`` guard.  The forkserver itself is one idle process per
interpreter that multiprocessing stops at exit.

Errors in a worker come back as :class:`~tpcflow.loader.worker.BatchFillError` naming
file and entry; a worker that dies raises :class:`~tpcflow.loader.runtime.WorkerDiedError`;
a batch that does not arrive within ``BatchTimeout`` raises ``TimeoutError``.  Nothing
ever waits without a bound.

Source: larcv ``ThreadProcessor`` (larcv2 ThreadIO) and its wiki page; larcv3
``QueueProcessor``.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import threading
import time
import weakref

import numpy as np

from tpcflow.errors import ConfigError, DataFormatError, ProductNotFoundError
from tpcflow.io import open_larcv3
from tpcflow.loader.config import load_processor_config
from tpcflow.loader.fillers import make_filler
from tpcflow.loader.runtime import Runtime
from tpcflow.loader.sampler import EntrySampler
from tpcflow.loader.storage import SlotLayout, SlotState, SlotView, create_file
from tpcflow.loader.worker import FillSpec, augment_flips, build_fillers, fill_slot, worker_main

__all__ = ["ThreadProcessor"]

log = logging.getLogger("tpcflow.loader")


def _default_start_method() -> str:
    return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


def _describer(reader):
    def describe(entries) -> str:
        if entries is None or len(entries) == 0:
            return "no entries"
        files = sorted({str(reader.locate(int(e))[0]) for e in np.unique(entries)[:8]})
        return f"entries {np.asarray(entries).tolist()[:16]} of {', '.join(files)}"

    return describe


class ThreadProcessor:
    """larcv's ThreadProcessor on top of the larcv3 reader.

    Parameters
    ----------
    config : dict, str, Path or ProcessorConfig
        The ThreadProcessor block (see :mod:`tpcflow.loader.config`).
    **overrides
        Fields of ProcessorConfig to replace, e.g. ``input_files=[...]``, ``num_threads=2``.

    Raises
    ------
    ConfigError
        Bad configuration.
    ProductNotFoundError
        A filler names a product that is not in the input; lists the available products.
    DataFormatError
        An input file is missing or is not larcv3.

    Examples
    --------
    >>> proc = ThreadProcessor(cfg)
    >>> proc.start_manager(4)
    >>> sid = proc.next_filled()
    >>> image = proc.batch_data(sid, "image")   # numpy view into the slot
    >>> proc.release_data(sid)
    >>> proc.stop_manager()
    """

    def __init__(self, config, **overrides):
        self.config = load_processor_config(config, **overrides)
        fillers = [make_filler(fc.name, fc.process_type, fc.params) for fc in self.config.fillers]
        try:  # only the products the fillers read must be in every file
            self.reader = open_larcv3(list(self.config.input_files), products=[f.key for f in fillers])
        except ProductNotFoundError as err:
            names = [f.name for f in fillers if f.key == err.product]
            err.product = f"{err.product} (batch filler {names[0]!r})" if names else err.product
            raise
        products = {p.key: p for p in self.reader.products}
        self.fillers = []
        self._bound = []
        first = self.reader.files[0]
        for f in fillers:
            metas = self._metas(f.key) if (f.key in products and f.ptype != "particle") else None
            f.bind(products, metas, file_path=first)
            self.fillers.append(f)
            self._bound.append(({k: v for k, v in products.items()}, metas))
        self._rt: Runtime | None = None
        self._finalizer = None
        self.batch_size = 0
        self._start_epoch = 0

    def _metas(self, key):
        """The metas of ``key`` in the first entry, checked to be the same grid in every file's first entry.

        Raises
        ------
        DataFormatError
            If two files hold the product on different grids: a minibatch has one shape, and the
            other file's voxels would be squeezed into the first file's grid.
        """
        first = None
        for path, start, stop in zip(self.reader.files, self.reader.file_starts,
                                     [*self.reader.file_starts[1:], len(self.reader)]):
            if start == stop:
                continue
            metas = [p.meta for p in self.reader.read(start, products=[key]).products[key]]
            if first is None:
                first = (path, metas)
            elif [m.number_of_voxels for m in metas] != [m.number_of_voxels for m in first[1]]:
                raise DataFormatError(
                    f"{key}: {first[0]} holds planes of {[m.number_of_voxels for m in first[1]]} voxels, {path} of "
                    f"{[m.number_of_voxels for m in metas]}; one minibatch has one grid: read these files in "
                    "separate runs, or make them at the same resolution", file_path=path)
        return first[1] if first is not None else []

    # -- introspection -----------------------------------------------------------
    def __len__(self) -> int:
        """Entries in the input."""
        return len(self.reader)

    @property
    def filler_names(self) -> list[str]:
        """Batch names, in ProcessName order (larcv ``storage_name``)."""
        return [f.name for f in self.fillers]

    def storage_name(self, i: int) -> str:
        return self.fillers[i].name

    @property
    def running(self) -> bool:
        return self._rt is not None and not self._rt.stopping

    def __repr__(self):
        return (
            f"<ThreadProcessor {len(self)} entries, fillers {self.filler_names}, NumThreads "
            f"{self.config.num_threads}, NumStorage {self.config.num_storage}, running={self.running}>"
        )


    # -- starting and stopping ---------------------------------------------------
    def _start(self, batch_size: int) -> Runtime:
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be > 0, but got batch_size={batch_size}")
        if self._rt is not None and not self._rt.stopping:
            if batch_size == self.batch_size:
                return self._rt
            self.stop_manager()
        cfg = self.config
        self.batch_size = int(batch_size)
        layout = SlotLayout(self.fillers, batch_size, cfg.num_storage)
        path, mm = create_file(layout)
        rt = Runtime(layout, mm, cfg.num_storage)
        # the runtime must not reference the processor, or the processor would never be collected
        rt.describe = _describer(self.reader)
        rt.views = [SlotView(mm, layout, s) for s in range(cfg.num_storage)]
        self._finalizer = weakref.finalize(self, rt.shutdown)
        try:
            if cfg.num_threads == 0:
                fillers = build_fillers(self._spec(layout, path))
                reader, views = self.reader, rt.views
                seed = self.config.random_seed
                rt.sync_fill = lambda s, entries, tag: fill_slot(
                    reader, fillers, views[s], entries, flips=augment_flips(fillers, seed, tag, len(entries))
                )
            else:
                self._start_workers(rt, layout, path, mm)
        except BaseException:
            rt.shutdown()
            raise
        finally:
            os.unlink(path)  # every worker has mapped it: nothing to leak
        self._rt = rt
        return rt

    def _spec(self, layout, path) -> FillSpec:
        return FillSpec(
            list(map(str, self.config.input_files)), list(self.config.fillers), self._bound, layout, path,
            self.config.random_seed,
        )

    def _start_workers(self, rt: Runtime, layout, path, mm) -> None:
        cfg = self.config
        spec = self._spec(layout, path)
        if cfg.worker_type == "thread":
            rt.task_q, rt.result_q = queue.Queue(), queue.Queue()
            for wid in range(cfg.num_threads):
                t = threading.Thread(
                    target=worker_main, args=(wid, spec, rt.task_q, rt.result_q, mm, True), daemon=True,
                    name=f"tpcflow-loader-{wid}",
                )
                t.start()
                rt.workers.append(t)
        else:
            method = cfg.start_method or _default_start_method()
            ctx = mp.get_context(method)
            if method == "forkserver":
                ctx.set_forkserver_preload(["numpy", "h5py", "tpcflow.io", "tpcflow.loader.worker"])
            rt.task_q, rt.result_q = ctx.Queue(), ctx.Queue()
            for wid in range(cfg.num_threads):
                p = ctx.Process(
                    target=worker_main, args=(wid, spec, rt.task_q, rt.result_q), daemon=True,
                    name=f"tpcflow-loader-{wid}",
                )
                p.start()
                rt.workers.append(p)
                rt.worker_pids.append(p.pid)
        ready, deadline = 0, time.monotonic() + 120
        while ready < len(rt.workers):
            try:
                kind, wid, payload = rt.result_q.get(timeout=0.2)
            except queue.Empty:
                rt.check_workers()
                if rt.error is not None:
                    if cfg.worker_type != "thread":
                        rt.error.add_note(
                            "A loader worker died while starting. Worker processes start with "
                            f"{cfg.start_method or _default_start_method()!r}, which re-imports your main "
                            "script: if you run one, put the code "
                            "that creates the loader under `if __name__ == \"__main__\":` (as with "
                            "torch's DataLoader), or set WorkerType: thread."
                        )
                    raise rt.error
                if time.monotonic() > deadline:
                    raise TimeoutError("loader workers did not start within 120 s")
                continue
            if kind == "fatal":
                raise payload
            ready += kind == "ready"
        rt.collector = threading.Thread(target=rt.collect_loop, daemon=True, name="tpcflow-loader-collector")
        rt.collector.start()

    def _default_plan(self, batch_size: int):
        sampler = EntrySampler(
            len(self), batch_size, mode=self.config.random_access, seed=self.config.random_seed
        )
        return (((epoch, i), b) for epoch, i, b in sampler.stream(self._start_epoch))

    def start_manager(self, batch_size: int) -> None:
        """Start the workers and keep every free slot filling with the next ``batch_size`` entries.

        The entry stream runs on across epochs (larcv style); use
        :class:`~tpcflow.loader.batch_loader.BatchLoader` for epochs and sharding.
        """
        rt = self._start(batch_size)
        if rt.plan is None:
            rt.restart(self._default_plan(batch_size))
        rt.auto = True
        rt.dispatch()

    def batch_process(self, batch_size: int) -> bool:
        """Fill one more slot with the next entries; False if no slot is free (larcv semantics)."""
        rt = self._start(batch_size)
        if rt.plan is None:
            rt.restart(self._default_plan(batch_size), dispatch=False)
        return rt.dispatch(limit=1) == 1

    def stop_manager(self) -> None:
        """Stop and join every worker (bounded; see NOTE [ Loader shutdown ] in runtime.py)."""
        if self._rt is not None:
            self._rt.shutdown()
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None

    def reset(self) -> None:
        """Stop, and start the entry stream from the beginning on the next start."""
        self.stop_manager()
        self._rt = None
        self._start_epoch = 0

    def close(self) -> None:
        self.reset()
        self.reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- slots -------------------------------------------------------------------
    def _runtime(self) -> Runtime:
        if self._rt is None or self._rt.stopping:
            raise RuntimeError("the ThreadProcessor is not running: call start_manager(batch_size) first")
        return self._rt

    def storage_status_array(self) -> np.ndarray:
        """(NumStorage,) int64 slot states (:class:`SlotState`: 1 empty, 2 filling, 3 filled, 4 released)."""
        if self._rt is None:
            return np.full(self.config.num_storage, int(SlotState.UNKNOWN), dtype=np.int64)
        with self._rt.cond:
            if self._rt.error is not None:
                raise self._rt.error
            return self._rt.states.copy()

    def release_data(self, storage_id: int) -> None:
        """Mark a slot as consumed so that it is refilled."""
        rt = self._runtime()
        with rt.cond:
            if rt.states[storage_id] != SlotState.FILLED:
                raise ValueError(f"storage {storage_id} is {SlotState(int(rt.states[storage_id])).name}, not FILLED")
            rt.states[storage_id] = SlotState.RELEASED
        if rt.auto:
            rt.dispatch()

    def next_filled(self, timeout: float | None = None) -> int:
        """Wait for the next batch in sequence order and return its storage id.

        Raises
        ------
        BatchFillError, WorkerDiedError
            From the workers.
        TimeoutError
            Nothing after ``timeout`` (default ``BatchTimeout``) seconds.
        """
        rt = self._runtime()
        sid = rt.wait_next(self.config.batch_timeout if timeout is None else timeout)
        if self.config.verbosity <= 1:
            log.info("batch %s in storage %d: entries %s", rt.tags[sid], sid, rt.tasks[sid].tolist())
        return sid

    def _check_filled(self, storage_id: int) -> Runtime:
        rt = self._runtime()
        if rt.states[storage_id] != SlotState.FILLED:
            raise ValueError(f"storage {storage_id} is {SlotState(int(rt.states[storage_id])).name}, not FILLED")
        return rt

    def batch_data(self, storage_id: int, name: str) -> np.ndarray:
        """The batch ``name`` of a FILLED slot: a numpy view valid until the slot is released."""
        rt = self._check_filled(storage_id)
        if name not in self.filler_names:
            raise KeyError(f"no batch filler {name!r}; available: {self.filler_names}")
        view = rt.views[storage_id]
        k = self.filler_names.index(name)
        rows = int(view.arrays["_rows"][k])
        return view.arrays[name][:rows]

    def batch(self, storage_id: int) -> dict[str, np.ndarray]:
        """Every batch of a FILLED slot, by filler name (views, valid until release)."""
        return {name: self.batch_data(storage_id, name) for name in self.filler_names}

    def _slot_rows(self, storage_id: int, key: str) -> np.ndarray:
        view = self._check_filled(storage_id).views[storage_id]
        return view.arrays[key][: view.n].copy()

    def entries(self, storage_id: int) -> np.ndarray:
        """(B,) int64 global entries of a FILLED slot."""
        return self._slot_rows(storage_id, "_entries")

    def event_ids(self, storage_id: int) -> np.ndarray:
        """(B, 3) int64 run / subrun / event of a FILLED slot."""
        return self._slot_rows(storage_id, "_event_ids")

    def tag(self, storage_id: int):
        """(epoch, batch index) of the batch in a slot."""
        return self._runtime().tags[storage_id]
