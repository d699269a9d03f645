"""Benchmark the batch loader on a generated full-resolution SBND file.

Measures, in one run (events/s, warm page cache):

* dense CosmicTagger batches [B,3,640,1024] (downsample 1; image float32 + label int64),
  and at full resolution [B,3,1280,2048] per worker CPU-second, against larcv's 112 ev/s on
  2 cores from the shared RECIPES (QueueProcessor + numpy densify, i.e. ~56 per core):
  a naive per-event loop (reader.read + numpy densify + torch pooling), the loader with one
  worker process, with all workers, and with worker *threads* (1 and all) to show the
  h5py global lock;
* sparse batches (BatchFillerSparseTensor2D, MaxVoxels 50000, charge + labels): naive loop,
  one worker, all workers;
* larcv's QueueProcessor, only if ``import larcv`` works (optional; skipped otherwise);
* a consumer that "trains" with a fixed step (sleep, as a GPU step leaves the CPU free)
  longer than the time one worker needs to fill one batch: the fraction of time spent
  waiting for data.

Run: ``python benchmarks/bench_loader.py`` (``--quick`` for a short run).  Ends with
``BENCH <name> <value> <unit> baseline=<value> ratio=<x>`` lines.
"""

from __future__ import annotations

import argparse
import os

# One inflate thread per process everywhere (the loader's worker processes use one too), so
# that every configuration runs exactly as many busy threads as it has workers: on a shared
# machine, extra threads would otherwise just win a larger share of the CPU.
os.environ.setdefault("TPCFLOW_IO_THREADS", "1")
import tempfile
import time
from pathlib import Path

import numpy as np

from tpcflow.io import open_larcv3
from tpcflow.loader import ThreadProcessor, cosmic_tagger_config
from tpcflow.sim.sbnd import generate_file


def naive_dense(reader, batches, ds=1):
    """Per-event read, densify, then torch pooling of the batch (CosmicTagger's way)."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    k = 2**ds
    for entries in batches:
        img = np.zeros((len(entries), 3, 1280, 2048), np.float32)
        lab = np.zeros((len(entries), 3, 1280, 2048), np.float32)
        for b, e in enumerate(entries):
            ev = reader.read(int(e), products=["sparse2d/sbndwire", "sparse2d/sbnd_cosmicseg"])
            for p, (q, l) in enumerate(zip(ev.products["sparse2d/sbndwire"], ev.products["sparse2d/sbnd_cosmicseg"])):
                img[b, p] = q.to_dense().T
                lab[b, p] = l.to_dense().T
        F.avg_pool2d(torch.from_numpy(img), k)
        F.max_pool2d(torch.from_numpy(lab), k).long()


def naive_sparse(reader, batches, maxv=50000):
    for entries in batches:
        out = {n: np.full((len(entries), 3, maxv, 3), -999, np.float32) for n in ("charge", "label")}
        for b, e in enumerate(entries):
            ev = reader.read(int(e), products=["sparse2d/sbndwire", "sparse2d/sbnd_cosmicseg"])
            for name, key in (("charge", "sparse2d/sbndwire"), ("label", "sparse2d/sbnd_cosmicseg")):
                for p, sp in enumerate(ev.products[key]):
                    n = min(len(sp), maxv)
                    out[name][b, p, :n, :2] = sp.coords[:n]
                    out[name][b, p, :n, 2] = sp.values[:n]


def _spin(n):
    """Fixed CPU work (numpy sorts), for the available-parallelism calibration."""
    rng = np.random.default_rng(0)
    for _ in range(n):
        np.sort(rng.random(200_000))
    return n


def cpu_parallelism(workers, n=40):
    """Throughput of ``workers`` processes doing fixed work, relative to one: what the CPU offers now."""
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing as mp

    rates = {}
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("forkserver")) as ex:
        list(ex.map(_spin, [1] * workers))
        for k in (1, workers):
            t0 = time.perf_counter()
            list(ex.map(_spin, [n] * k))
            rates[k] = k * n / (time.perf_counter() - t0)
    return rates[workers] / rates[1]


def _cpu_seconds(pids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (FileNotFoundError, IndexError):
            pass
    return total


def _h5py_reads(path, n, worker=0):
    """Read ``n`` slices of the voxel table through h5py (decompression inside h5py's lock).

    Each worker starts at a different slice, so that no two read the same chunks at once.
    """
    import h5py

    with h5py.File(path, "r", rdcc_nbytes=0) as f:
        d = f["Data/sparse2d_sbndwire_group/voxels"]
        step = max(1, d.shape[0] // 8)
        total = 0
        for i in range(n):
            a = ((i + 3 * worker) * step) % max(1, d.shape[0] - step)
            total += d[a : a + step].nbytes
    return total


def h5py_scaling(path, n_reads=24):
    """MB/s of plain h5py reads with 1 and 2 threads, and with 2 processes."""
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
    import multiprocessing as mp

    out = {}
    for kind, workers in (("thread", 1), ("thread", 2), ("process", 2)):
        ex = (ThreadPoolExecutor(workers) if kind == "thread"
              else ProcessPoolExecutor(workers, mp_context=mp.get_context("forkserver")))  # fmt: skip
        with ex:
            ids = list(range(workers))
            list(ex.map(_h5py_reads, [path] * workers, [1] * workers, ids))  # warm-up / start
            t0 = time.perf_counter()
            nbytes = sum(ex.map(_h5py_reads, [path] * workers, [n_reads // workers] * workers, ids))
            out[f"{kind}{workers}"] = nbytes / 1e6 / (time.perf_counter() - t0)
    return out


def sparse_config(files, threads, worker="process"):  # noqa: D103
    fill = {"MaxVoxels": 50000, "AllowEmpty": True}
    return {
        "ThreadProcessor": {
            "RandomAccess": 2,
            "InputFiles": [str(f) for f in files],
            "ProcessType": ["BatchFillerSparseTensor2D", "BatchFillerSparseTensor2D"],
            "ProcessName": ["charge", "label"],
            "NumThreads": threads,
            "NumStorage": max(2, 2 * threads),
            "WorkerType": worker,
            "ProcessList": {"charge": {"Producer": "sbndwire", **fill}, "label": {"Producer": "sbnd_cosmicseg", **fill}},
        }
    }


def loader_rate(cfg, batch_size, n_batches, step=0.0):
    """Events/s of the loader (consumer releases at once, or after ``step`` s); and wait fraction."""
    proc = ThreadProcessor(cfg)
    try:
        proc.start_manager(batch_size)
        for _ in range(proc.config.num_storage):  # warm-up: workers started, every slot's pages touched
            proc.release_data(proc.next_filled())
        if step:
            time.sleep(step * 2)  # let the buffer fill, as in training after start-up
        wait = 0.0
        pids = proc._rt.worker_pids
        c0 = _cpu_seconds(pids)
        ready = int((proc.storage_status_array() == 3).sum())  # made before t0: not counted
        t0 = time.perf_counter()
        for _ in range(n_batches):
            tw = time.perf_counter()
            sid = proc.next_filled()
            wait += time.perf_counter() - tw
            if step:
                time.sleep(step)
            proc.release_data(sid)
        dt = time.perf_counter() - t0
        cpu = _cpu_seconds(pids) - c0
    finally:
        proc.stop_manager()
    n_ev = max(1, n_batches - ready) * batch_size
    return n_ev / dt, wait / dt, (n_ev / cpu if cpu > 0 else float("nan"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short run (fewer events, batches and repeats)")
    ap.add_argument("--events", type=int, default=None, help="events in the generated file (default 32, quick 12)")
    ap.add_argument("--batch-size", type=int, default=4, help="minibatch size")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="'all workers' count")
    ap.add_argument("--repeats", type=int, default=None, help="repeats per figure, median kept (default 3, quick 1)")
    args = ap.parse_args(argv)
    n_events = args.events or (12 if args.quick else 32)
    n_batches = 10 if args.quick else 24
    repeats = args.repeats or (1 if args.quick else 3)
    bs, nw = args.batch_size, args.workers
    load = os.getloadavg()[0]
    print(f"# cores={os.cpu_count()} workers={nw} batch={bs} events={n_events} load={load:.1f}; other jobs may share the CPU")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sbnd_full.h5"
        t0 = time.perf_counter()
        generate_file(path, n_events, seed=1, downsample=0)
        print(f"# generated {path.name} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
        reader = open_larcv3(path)
        rng = np.random.default_rng(0)
        batches = [rng.choice(n_events, bs, replace=False) for _ in range(max(3, n_batches // 3))]
        par = cpu_parallelism(nw)
        print(f"# CPU parallelism available now: {par:.2f}x with {nw} processes (ideal {nw})")
        h5 = h5py_scaling(path, 8 if args.quick else 24)
        print("# plain h5py reads (MB/s): " + ", ".join(f"{k} {v:.0f}" for k, v in h5.items()))

        res, eff = {}, {}
        t0 = time.perf_counter()
        naive_dense(reader, batches)
        res["dense_naive"] = len(batches) * bs / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        naive_sparse(reader, batches)
        res["sparse_naive"] = len(batches) * bs / (time.perf_counter() - t0)

        def dense(n, w="process", ds=1):
            cfg = cosmic_tagger_config([path], downsample=ds, num_threads=n)
            cfg["ThreadProcessor"]["WorkerType"] = w
            return cfg

        runs = [("dense", "process", 1), ("dense", "process", nw), ("dense", "thread", 1), ("dense", "thread", nw),
                ("sparse", "process", 1), ("sparse", "process", nw), ("fullres", "process", nw)]  # fmt: skip
        rates: dict = {}
        for _ in range(repeats):  # interleaved, median kept: load changes hit every figure alike
            for kind, w, n in runs:
                if kind == "sparse":
                    cfg = sparse_config([path], n, w)
                else:
                    cfg = dense(n, w, ds=1 if kind == "dense" else 0)
                rate, _, per_cpu = loader_rate(cfg, bs, n_batches)
                rates.setdefault(f"{kind}_{w}{n}", []).append((rate, per_cpu))
        for key, vals in rates.items():
            res[key] = float(np.median([v[0] for v in vals]))
            eff[key] = float(np.median([v[1] for v in vals]))
            extra = f", {eff[key]:.1f} ev per worker-CPU-s" if "process" in key else ""
            print(f"# {key}: {res[key]:.1f} ev/s{extra} (runs: {', '.join(f'{v[0]:.1f}' for v in vals)})")

        fill_time = bs / res[f"dense_process{nw}"]  # wall time per batch with all workers, now
        step = 1.25 * fill_time
        _, wait, _ = loader_rate(dense(nw), bs, n_batches, step=step)
        print(f"# training step {step * 1e3:.0f} ms (> fill time of one batch {fill_time * 1e3:.0f} ms)")

        try:
            import larcv  # noqa: F401

            print("# larcv is importable, but the QueueProcessor comparison is not wired in this benchmark")
        except ImportError:
            print("# larcv not installed: QueueProcessor comparison skipped (RECIPES: ~196 ev/s sparse, 112 dense+densify)")

    def line(name, value, unit, base):
        print(f"BENCH {name} {value:.2f} {unit} baseline={base:.2f} ratio={value / base:.2f}")

    line("cpu_parallelism_available", par, "x", 1.0)
    line("h5py_read_2threads", h5["thread2"], "MB/s", h5["thread1"])
    line("h5py_read_2processes", h5["process2"], "MB/s", h5["thread1"])
    line("loader_dense_1worker", res["dense_process1"], "ev/s", res["dense_naive"])
    line("loader_dense_allworkers", res[f"dense_process{nw}"], "ev/s", res["dense_process1"])
    line("loader_dense_allworkers_vs_naive", res[f"dense_process{nw}"], "ev/s", res["dense_naive"])
    line("loader_dense_allworkers_per_cpu_s", eff[f"dense_process{nw}"], "ev/cpu-s", eff["dense_process1"])
    line("loader_dense_threads_all", res[f"dense_thread{nw}"], "ev/s", res["dense_thread1"])
    line("loader_dense_fullres_allworkers_per_cpu_s", eff[f"fullres_process{nw}"], "ev/cpu-s", 112.0 / 2)
    line("loader_sparse_1worker", res["sparse_process1"], "ev/s", res["sparse_naive"])
    line("loader_sparse_allworkers", res[f"sparse_process{nw}"], "ev/s", res["sparse_process1"])
    print(f"BENCH loader_data_wait {100 * wait:.2f} %step baseline=2.00 ratio={100 * wait / 2:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
