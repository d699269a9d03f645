"""Submit larcv3 events to a cosmic-tagger service and write the predictions as larcv3 sparse2d.

Resumable and exact: finished predictions are flushed to a sidecar directory ``OUT.h5.partial/``
(one ``chunk-*.npz`` per flush, each written to a temporary name and renamed). A rerun with the
same inputs reads the chunks, skips those entries, and sends only the rest. When every entry is
done, ``OUT.h5`` is written in entry order through :class:`tpcflow.io.Larcv3Writer` (which appears
atomically on close) and the sidecar is removed. So an entry is never lost (it is in a chunk or it
is sent again) nor duplicated (each entry is written once, from one chunk).

Output products: ``sparse2d/<out>`` (label per input voxel, float32 0/1/2) and
``sparse2d/<out>_score`` (softmax probability of that label), with the input's metas and event ids.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tpcflow import atomic
from tpcflow.errors import ConfigError, DataFormatError, ProtocolError, ServiceUnavailableError
from tpcflow.io.products import PREDICTION_PRODUCER, prediction_producers
from tpcflow.serve.mdp.client import Client
from tpcflow.serve.mdp.contract import decode_outputs
from tpcflow.serve.mdp.cosmic import encode_request
from tpcflow.serve.mdp.protocol import check_endpoint
from tpcflow.serve.mdp.sidecar import Sidecar

__all__ = ["SubmitResult", "submit_files"]

log = logging.getLogger(__name__)


@dataclass
class SubmitResult:
    """Outcome of :func:`submit_files`."""

    output: Path
    entries: int
    sent: int
    skipped: int
    seconds: float
    local: int = 0  # events run by the local fallback


def _write_outputs(output: Path, n: int, side: Sidecar, out_producer: str, compression: int, root_out=None) -> None:
    """One pass over the finished entries: the larcv3 file, and the ROOT friend tree when asked."""
    from tpcflow.io import Event, EventID, Larcv3Writer, SparseProjection

    with Larcv3Writer(output, compression=compression) as writer, _friend_tree(root_out, out_producer) as friend:
        for entry in range(n):
            eid, metas, index, outputs = side.load(entry)
            products = {}
            for name, per_plane in outputs.items():
                columns = per_plane[0].shape[1] if per_plane else 1
                for k, producer in enumerate(prediction_producers(out_producer, name, columns)):
                    products[f"sparse2d/{producer}"] = [SparseProjection(m, ix, v[:, k].copy())
                                                       for m, ix, v in zip(metas, index, per_plane, strict=True)]
            writer.write(Event(EventID(*eid), products, entry=entry))
            friend(eid, index, outputs)


@contextmanager
def _friend_tree(path, out_producer: str, chunk: int = 64):
    """Yield ``add(event_id, index, outputs)`` filling a flat ROOT TTree ``predictions`` (uproot).

    Branches: run, subrun, event; per plane ``p<k>_index`` and per output and plane the values,
    jagged; entry-aligned with the inputs, so it is a friend tree.  Written ``chunk`` entries at a
    time (memory bounded), atomically.  With ``path`` None, ``add`` does nothing.
    """
    if path is None:
        yield lambda *args: None
        return
    import awkward as ak
    import uproot

    with atomic.atomic_path(Path(path)) as tmp, uproot.recreate(tmp) as f:
        buffer: dict[str, list] = {}

        def flush() -> None:
            if not buffer or not buffer["run"]:
                return
            data = {k: (np.asarray(v, np.int64) if k in ("run", "subrun", "event") else ak.Array(v))
                    for k, v in buffer.items()}
            if "predictions" in f:
                f["predictions"].extend(data)
            else:
                f["predictions"] = data
            for v in buffer.values():
                v.clear()

        def add(eid, index, outputs) -> None:
            for key, v in zip(("run", "subrun", "event"), eid):
                buffer.setdefault(key, []).append(v)
            for p, ix in enumerate(index):
                buffer.setdefault(f"p{p}_index", []).append(ix.astype(np.uint64))
            for name, per_plane in outputs.items():
                for p, v in enumerate(per_plane):
                    for k, producer in enumerate(prediction_producers(out_producer, name, v.shape[1])):
                        buffer.setdefault(f"{producer}_p{p}", []).append(v[:, k])
            if len(buffer["run"]) >= chunk:
                flush()

        yield add
        flush()


def _progress_bar(enabled: bool, total: int, initial: int, service: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="event", desc=f"submit {service}", dynamic_ncols=True)


def _checked_result(entry: int, request: tuple, reply: list, side: Sidecar, service: str) -> tuple:
    """``(entry, event_id, metas, index, {output: per-plane values})`` of a reply, checked against its request.

    Raises
    ------
    ProtocolError
        If the event id, the plane count or the voxel counts differ from the request's, or the
        reply comes from another network than the earlier ones (:meth:`Sidecar.check_model`).
    """
    eid, index, metas = request
    r_eid, outputs, model = decode_outputs(reply, with_model=True)
    side.check_model(model, service)
    want = [len(x) for x in index]
    for name, per_plane in outputs.items():
        got = [len(x) for x in per_plane]
        if (r_eid is not None and tuple(r_eid) != tuple(eid)) or got != want:
            raise ProtocolError(f"reply for entry {entry} does not match its request: event id {r_eid} vs {eid}, "
                                f"output {name!r} voxels {got} vs {want}")
    return entry, eid, metas, index, {k: [np.array(x) for x in v] for k, v in outputs.items()}


def _exchange(client, service: str, reader, entries: list[int], keys: list[str], side: Sidecar, bar, *, compression,
              max_in_flight: int, flush_every: int, flush_seconds: float) -> int:
    """Send ``entries``, keep up to ``max_in_flight`` outstanding, flush results to the sidecar; return the count.

    Finished results are flushed also on error or Ctrl-C, so that a rerun resumes after them.
    """
    pending: dict[int, tuple] = {}  # entry -> (event id, index per plane, meta per plane)

    def bodies():
        for entry in entries:
            ev = reader.read(entry, products=keys)
            planes = _planes(ev, keys, reader, entry)
            pending[entry] = (ev.event_id.as_tuple(), [p.index for p in planes], [p.meta for p in planes])
            yield entry, encode_request(ev.event_id, planes, compression=compression)

    done: list = []
    sent = 0
    last_flush = time.monotonic()
    try:
        for entry, reply in client.map(service, bodies(), max_in_flight=max_in_flight):
            done.append(_checked_result(entry, pending.pop(entry), reply, side, service))
            sent += 1
            if bar is not None:
                bar.update(1)
            if len(done) >= flush_every or time.monotonic() - last_flush > flush_seconds:
                side.flush(done)
                done, last_flush = [], time.monotonic()
    finally:
        side.flush(done)
    return sent


def open_inputs(paths: list[Path], producer: str):
    """Open the inputs of :func:`submit_files` and name the products sent.

    ``producer`` is one or more comma-separated product names: for larcv3 files ``<producer>``
    (sparse2d) or ``sparse2d/<producer>`` / ``image2d/<producer>``; for larcv1/larcv2 ROOT files
    the image2d producers (``wire``).  Several products are sent in one request, their planes in
    the order given.

    Returns
    -------
    (reader, list of product keys)

    Raises
    ------
    ConfigError
        If the inputs mix HDF5 and ROOT files, or a product type is not sparse2d/image2d.
    DataFormatError, ProductNotFoundError
        From the readers (missing file, missing product, not larcv).
    """
    from tpcflow.io import open_larcv3
    from tpcflow.io.summary import detect_format

    names = [p.strip() for p in producer.split(",") if p.strip()]
    if not names:
        raise ConfigError("--producer: give at least one product")
    kinds = {detect_format(p) for p in paths}
    if len(kinds) > 1:
        raise ConfigError(f"inputs mix larcv3 (HDF5) and ROOT files: {[str(p) for p in paths]}; submit them separately")
    if kinds == {"root"}:
        from tpcflow.io.larcv_root_reader import RootImageReader

        reader = RootImageReader(paths, [n.removeprefix("image2d/") for n in names])
        return reader, reader.keys
    keys = [n if "/" in n else f"sparse2d/{n}" for n in names]
    bad = [k for k in keys if k.split("/", 1)[0] not in ("sparse2d", "image2d")]
    if bad:
        raise ConfigError(f"--producer: {bad} are not sparse2d or image2d products")
    return open_larcv3(paths, products=keys), keys


def _planes(event, keys: list[str], reader, entry: int) -> list:
    """The planes sent for one entry: every product's projections in order, dense images as their non-zero pixels."""
    from tpcflow.io.products import DenseImage

    planes = []
    for key in keys:
        projections = event.products.get(key)
        if not projections:
            raise DataFormatError(f"product {key!r} has no projection", file_path=reader.locate(entry)[0], entry=entry)
        planes += [p.to_sparse() if isinstance(p, DenseImage) else p for p in projections]
    return planes


def submit_files(
    broker: str,
    service: str,
    inputs,
    output,
    *,
    producer: str = "sbndwire",
    out_producer: str = PREDICTION_PRODUCER,
    max_in_flight: int = 16,
    timeout: float = 60.0,
    retries: int = 2,
    wait_service: float = 30.0,
    flush_every: int = 64,
    flush_seconds: float = 10.0,
    compression: str | None = "lz4",
    h5_compression: int = 1,
    progress: bool = True,
    curve=None,
    context=None,
    root_out=None,
    fallback=None,
    kserve: str | None = None,
    ssh=None,
) -> SubmitResult:
    """Send every entry of ``inputs`` to ``service`` and write ``output`` (see module docstring).

    Parameters
    ----------
    broker : str
        Broker endpoint.
    inputs : path or list of paths
        larcv3 files holding ``sparse2d/<producer>``, or larcv1 / larcv2 ROOT files holding
        ``image2d_<producer>_tree`` (the non-zero pixels of each plane are sent; the output's
        metas are the ROOT images', axes (time, wire)).
    output : path
        larcv3 file to write; must not exist.
    max_in_flight : int
        Requests outstanding at once.
    timeout, retries
        Per-attempt reply timeout [s] and extra attempts (see :class:`~tpcflow.serve.mdp.Client`).
    wait_service : float
        Seconds to wait for a worker of ``service``, asked through MMI ``mmi.service`` [s]; ``0``
        sends at once without asking (brokers without MMI, such as majortomo's).
    ssh : SSHTunnel, optional
        Reach ``broker`` (as seen from the ssh server) through an ssh tunnel
        (:class:`~tpcflow.serve.mdp.ssh.SSHTunnel`).
    kserve : str, optional
        A KServe v2 server URL (Triton, ``tpcflow serve-http``) instead of the broker: ``service``
        is then the model name of a cosmic tagger exported by ``tpcflow export --triton``
        (:class:`~tpcflow.serve.mdp.kserve.KServeService`).
    fallback : LocalFallback, optional
        Run the events left in this process (:class:`~tpcflow.serve.mdp.fallback.LocalFallback`)
        when the broker or the service cannot be reached within ``timeout`` (after ``retries``), or
        goes away during the run; a warning says so.  Events already answered are kept, so each
        event is written exactly once.
    root_out : path, optional
        Also write a flat ROOT TTree ``predictions`` (run, subrun, event; per plane the voxel
        indices ``p<k>_index`` and per output the values ``<producer>_p<k>``), entry-aligned with
        the inputs: a friend tree for ROOT users.

    Outputs: each output of the service's contract (:mod:`tpcflow.serve.mdp.contract`) becomes
    the sparse2d product :func:`~tpcflow.io.products.prediction_producers` gives (CosmicTagger: ``<out_producer>`` for the
    labels and ``<out_producer>_score``), float32 values at the input voxels, nothing re-normalised.

    Raises
    ------
    ConfigError
        If ``output`` exists or the sidecar belongs to other inputs.
    ServiceError
        If the service is unavailable, replies with an error, or does not answer in time.
    ProtocolError
        If a reply does not match its request (event id, voxel count).
    """
    t0 = time.monotonic()
    if kserve is None:
        check_endpoint(broker, "broker")
    output = Path(output)
    if output.exists():
        raise ConfigError(f"output: {str(output)!r} already exists; remove it or choose another -o")
    if not output.parent.is_dir():
        raise ConfigError(f"output: the folder {str(output.parent)!r} does not exist")
    paths = [Path(p) for p in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)]
    reader, keys = open_inputs(paths, producer)
    n = len(reader)
    manifest = {"inputs": [str(p.resolve()) for p in reader.files], "sizes": [p.stat().st_size for p in reader.files],
                "entries": n, "producer": producer, "out_producer": out_producer, "service": service,
                "sidecar_version": 3}
    try:
        side = Sidecar(output, manifest)
    except BaseException:
        reader.close()
        raise
    with side:  # the lock is held until the outputs are written
        todo = [e for e in range(n) if e not in side.where]
        skipped = n - len(todo)
        sent = 0
        ok = False
        local = 0
        try:
            if todo:
                if kserve is not None:
                    from tpcflow.serve.mdp.kserve import KServeService

                    client = KServeService(kserve, service, timeout=timeout)
                else:
                    client = Client(broker, timeout=timeout, retries=retries, copy=False, context=context,
                                    curve=curve, ssh=ssh)
                bar = _progress_bar(progress, n, skipped, service)
                flush = {"flush_every": flush_every, "flush_seconds": flush_seconds}
                try:
                    try:
                        if wait_service > 0:  # 0: brokers without MMI (majortomo) are not asked
                            client.wait_for_service(service, timeout=wait_service)
                        sent = _exchange(client, service, reader, todo, keys, side, bar, compression=compression,
                                         max_in_flight=max_in_flight, **flush)
                    except ServiceUnavailableError as err:
                        if fallback is None:
                            raise
                        rest = [e for e in todo if e not in side.where]
                        warnings.warn(f"tpcflow submit: {err}; FALLING BACK to {fallback.describe()} for the "
                                      f"{len(rest)} events left ({len(side.where)} answered by the service)",
                                      RuntimeWarning, stacklevel=2)
                        log.warning("local fallback: %s", err)
                        local = _exchange(fallback, service, reader, rest, keys, side, bar, compression=compression,
                                          max_in_flight=1, **flush)
                        sent = len(todo) - len(rest)
                finally:
                    client.close()
                    if bar is not None:
                        bar.close()
            ok = True
        finally:
            reader.close()
            if not ok and not side.where:  # nothing finished: leave no resume folder behind
                shutil.rmtree(side.dir, ignore_errors=True)
        _write_outputs(output, n, side, out_producer, h5_compression, root_out)
        shutil.rmtree(side.dir, ignore_errors=True)
    return SubmitResult(output, n, sent, skipped, time.monotonic() - t0, local)
