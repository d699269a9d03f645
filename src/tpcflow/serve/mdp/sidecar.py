"""The resume folder of ``tpcflow submit``: ``OUT.h5.partial/`` with its manifest, lock and result chunks.

Finished predictions are flushed there (one ``chunk-*.npz`` per flush, each written to a temporary
name and renamed); a rerun with the same inputs reads the chunks and skips those entries.  An
exclusive ``flock`` keeps one submit per output.  Used by :func:`tpcflow.serve.mdp.submit.submit_files`.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np

from tpcflow import atomic
from tpcflow.errors import ConfigError, ProtocolError
from tpcflow.io.products import ImageMeta

__all__ = ["Sidecar"]


class Sidecar:
    """The ``OUT.h5.partial`` directory: manifest + atomically written result chunks."""

    def __init__(self, output: Path, manifest: dict):
        self.dir = output.with_name(output.name + ".partial")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = self._take_lock(output)
        try:
            self._open(manifest)
        except BaseException:
            self.close()
            raise

    def _take_lock(self, output: Path) -> int:
        """An exclusive ``flock`` on ``<dir>/lock``: one submit per output; the system frees it if we die.

        Raises
        ------
        ConfigError
            If another process holds it.
        """
        import fcntl

        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"output: another tpcflow submit is writing {str(output)!r} (its resume folder "
                              f"{str(self.dir)!r} is locked); wait for it to finish, or choose another -o") from None
        return fd

    def close(self) -> None:
        """Release the lock."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> Sidecar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _open(self, manifest: dict) -> None:
        mpath = self.dir / "manifest.json"
        if mpath.exists():
            old = json.loads(mpath.read_text())
            if old != manifest:
                differ = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
                raise ConfigError(
                    f"resume directory {str(self.dir)!r} belongs to a different submission "
                    f"({', '.join(differ)} differ: {', '.join(f'{k}={old.get(k)!r}' for k in differ)} before); "
                    "resume with the same settings, or remove it to start again"
                )
        else:
            atomic.write_bytes(mpath, json.dumps(manifest, indent=1).encode())
        mfile = self.dir / "model.txt"
        #: the network the finished entries came from (set by the first reply; "" if the worker names none)
        self.model: str | None = mfile.read_text() if mfile.is_file() else None
        self.where: dict[int, tuple[Path, int]] = {}  # entry -> (chunk, row)
        for chunk in sorted(self.dir.glob("chunk-*.npz")):
            with np.load(chunk) as z:
                for row, entry in enumerate(z["entries"].tolist()):
                    self.where.setdefault(int(entry), (chunk, row))
        self._cache: dict[Path, dict] = {}


    def check_model(self, model: str, service: str) -> None:
        """Record the network of the first reply; refuse a reply from another one.

        Raises
        ------
        ProtocolError
            If ``model`` differs from the one the finished entries came from.
        """
        if self.model is None:
            atomic.write_text(self.dir / "model.txt", model)
            self.model = model
        elif model != self.model:
            raise ProtocolError(
                f"service {service!r} answered with model {model or '(unnamed)'!r}, but the {len(self.where)} "
                f"finished entries in {str(self.dir)!r} (and the earlier replies) came from model "
                f"{self.model or '(unnamed)'!r}: one output file holds one network's predictions. Serve that "
                "model again to resume, or remove the folder to start over with this one"
            )

    def flush(self, results: list) -> None:
        """Write finished entries ``[(entry, event_id, metas, index_per_plane, {output: per-plane values})]``.

        Every output is stored as float32 ``[voxels, columns]`` (what larcv3 sparse2d holds; the
        integer labels of the wire format are exact in float32 below 2**24).
        """
        if not results:
            return
        entries = np.array([r[0] for r in results], np.int64)
        eids = np.array([r[1] for r in results], np.int64).reshape(-1, 3)
        counts = np.array([[len(ix) for ix in r[3]] for r in results], np.int64)
        metas = np.array([json.dumps([m.to_dict() for m in r[2]]) for r in results])
        names = list(results[0][4])
        index = np.concatenate([np.asarray(a, np.uint64) for r in results for a in r[3]] or [np.zeros(0, np.uint64)])
        values = {}
        for name in names:
            parts = [np.asarray(a, np.float32).reshape(len(a), -1) for r in results for a in r[4][name]]
            values[f"out_{name}"] = np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)
        chunk = self.dir / f"chunk-{int(entries.min()):09d}-{uuid.uuid4().hex[:8]}.npz"
        with atomic.atomic_path(chunk) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, entries=entries, event_ids=eids, counts=counts, metas=metas, index=index,
                     names=np.array(names), **values)
        for row, e in enumerate(entries.tolist()):
            self.where.setdefault(e, (chunk, row))

    def load(self, entry: int):
        """Return ``(event_id, [ImageMeta] per plane, [index] per plane, {output: [values] per plane})``."""
        chunk, row = self.where[entry]
        z = self._cache.get(chunk)
        if z is None:
            if len(self._cache) >= 4:
                self._cache.pop(next(iter(self._cache)))
            with np.load(chunk) as f:
                z = {k: f[k] for k in f.files}
            z["offsets"] = np.concatenate([[0], np.cumsum(z["counts"].reshape(-1))])
            self._cache[chunk] = z
        nplanes = z["counts"].shape[1]
        index, outputs = [], {str(n): [] for n in z["names"]}
        for p in range(nplanes):
            a, b = z["offsets"][row * nplanes + p], z["offsets"][row * nplanes + p + 1]
            index.append(z["index"][a:b])
            for name in outputs:
                outputs[name].append(z[f"out_{name}"][a:b])
        metas = [ImageMeta.from_dict(d) for d in json.loads(str(z["metas"][row]))]
        return tuple(z["event_ids"][row].tolist()), metas, index, outputs
