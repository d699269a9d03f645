"""Thread-safe LRU cache of loaded models, each with its dynamic batcher.

Keys are ``(name, version)``.  A model is loaded at most once at a time (one
lock per key; other callers wait for that load), loading happens outside the
cache-wide lock, and an evicted model's batcher finishes the requests already
queued before its thread stops (new ones get HTTP 503).
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import anyio.to_thread

from tpcflow.serve.http.batching import DynamicBatcher
from tpcflow.serve.http.loading import load_runner
from tpcflow.serve.http.repository import ModelEntry, ModelRepository

__all__ = ["LoadedModel", "ModelCache"]


@dataclass
class LoadedModel:
    """A model version ready to serve."""

    entry: ModelEntry
    batcher: DynamicBatcher
    loaded_at: float

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def version(self) -> int:
        return self.entry.version

    @property
    def params(self):
        return self.entry.params

    @property
    def labels(self) -> list[str] | None:
        return self.entry.labels

    @functools.cached_property
    def preprocessing(self):
        """The model's preprocessing (rows or images: :func:`~tpcflow.loader.root_preprocess.load_preprocessing`),
        or None."""
        if self.entry.params.preprocessing is None:
            return None
        from tpcflow.loader.root_preprocess import load_preprocessing

        return load_preprocessing(self.entry.params.preprocessing)


class ModelCache:
    """LRU cache of at most ``capacity`` loaded models of ``repository``.

    Parameters
    ----------
    repository : ModelRepository
    capacity : int
        Most models kept loaded.
    max_batch : int
        Batcher's most rows per call (1: no batching).
    max_wait : float
        Batcher's extra wait for more requests [s].
    on_batch : callable, optional
        ``on_batch(model_name, rows, seconds)`` after each model call.
    torch_threads : int, optional
        Intra-op threads of each model's worker thread (default: the process's).
    """

    def __init__(self, repository: ModelRepository, *, capacity: int = 8, max_batch: int = 64,
                 max_wait: float = 0.0, on_batch: Callable[[str, int, float], None] | None = None,
                 torch_threads: int | None = None):
        self.repository = repository
        self.capacity = capacity
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.on_batch = on_batch
        self.torch_threads = torch_threads
        self._models: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, int], threading.Lock] = {}

    def __len__(self) -> int:
        return len(self._models)

    def peek(self, name: str, version: int | None = None) -> LoadedModel | None:
        """The loaded model for ``name`` (latest version if None), or None if not loaded.

        Cheap (one ``stat``); safe to call on the event loop.  Raises like
        :meth:`ModelRepository.resolve`.
        """
        key = (name, self.repository.resolve(name, version))
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
            return model

    def get(self, name: str, version: int | None = None) -> LoadedModel:
        """The loaded model, loading it if needed (blocking: call from a thread).

        Raises
        ------
        UnknownModelError, BadRequestError, ModelFormatError
            If the model does not exist or cannot be loaded.
        """
        key = (name, self.repository.resolve(name, version))
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                return model
            load_lock = self._loading.setdefault(key, threading.Lock())
        with load_lock:
            with self._lock:
                model = self._models.get(key)
            if model is None:
                evicted = []
                try:
                    model = self._load(*key)
                    with self._lock:
                        self._models[key] = model
                        while len(self._models) > self.capacity:
                            evicted.append(self._models.popitem(last=False)[1])
                finally:
                    with self._lock:
                        self._loading.pop(key, None)
                for old in evicted:
                    old.batcher.close()
        return model

    async def aget(self, name: str, version: int | None = None) -> LoadedModel:
        """:meth:`get` for the event loop: loads in a worker thread when needed."""
        model = self.peek(name, version)
        if model is not None:
            return model
        return await anyio.to_thread.run_sync(self.get, name, version)

    def _load(self, name: str, version: int) -> LoadedModel:
        entry = self.repository.entry(name, version)
        runner = load_runner(entry.model_file, entry.params.format or "torchscript", name, entry.params.input_names,
                             threads=self.torch_threads)

        def on_batch(rows: int, seconds: float) -> None:
            if self.on_batch is not None:
                self.on_batch(name, rows, seconds)

        batcher = DynamicBatcher(runner, max_batch=self.max_batch, max_wait=self.max_wait,
                                 name=f"{name}/{version}", on_batch=on_batch,
                                 thread_init=getattr(runner, "init_thread", None))
        return LoadedModel(entry=entry, batcher=batcher, loaded_at=time.time())

    def evict(self, name: str, version: int | None = None) -> None:
        """Drop ``name`` (every version, or one) from the cache."""
        with self._lock:
            keys = [k for k in self._models if k[0] == name and (version is None or k[1] == version)]
            dropped = [self._models.pop(k) for k in keys]
        for model in dropped:
            model.batcher.close()

    def info(self) -> list[dict]:
        """Loaded models with their batcher counters."""
        with self._lock:
            models = list(self._models.values())
        return [
            {"name": m.name, "version": m.version, "requests": m.batcher.stats.requests,
             "batches": m.batcher.stats.batches, "rows": m.batcher.stats.rows, "errors": m.batcher.stats.errors}
            for m in models
        ]

    def close(self) -> None:
        """Close every batcher (queued requests still complete)."""
        with self._lock:
            models = list(self._models.values())
            self._models.clear()
        for m in models:
            m.batcher.close()
