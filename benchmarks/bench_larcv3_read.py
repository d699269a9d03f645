"""Benchmark: read (and densify) every entry of a full-resolution larcv3 file.

Compares, in the same run and on the same file:

1. read + densify every entry: ``Larcv3Reader.read_sparse_block`` over blocks of
   entries + ``SparseBlock.to_dense(out=buffer)``, against a naive per-event h5py
   loop (extents -> voxel_extents -> voxels per projection, ``np.zeros`` + fill).
   Target: >= 3x the naive loop.
2. sparse read without densifying (index + values of every entry) against a raw
   h5py read of the ``voxels`` dataset alone (no splitting, no checks).
   Target: >= 80% of the raw rate.

Units: events/s; for densify, MB/s of dense float32 output (3 x 2048 x 1280 x 4 bytes per
event); for sparse reads, MB/s of larcv3 voxel rows (16 bytes per voxel).

The input is a generated 1000-event, 3 x 2048 x 1280 file (``tpcflow.sim.sbnd.generate_file``;
a simple random-voxel generator is used if tpcflow.sim is not available), cached
under ``$TMPDIR/tpcflow-bench``.  Each figure is the best of ``--repeat`` passes
over a warm page cache.

Run: ``python benchmarks/bench_larcv3_read.py`` (``--quick`` for 100 events).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from tpcflow.io import Event, EventID, ImageMeta, SparseProjection, open_larcv3, write_larcv3

KEY = "sparse2d/sbndwire"
GROUP = "Data/sparse2d_sbndwire_group"


def _fallback_events(n: int, seed: int):
    """Random voxels: ~0.7% occupancy of 3 x 2048 x 1280, values >= 5 (used only without tpcflow.sim)."""
    rng = np.random.default_rng(seed)
    metas = [ImageMeta(p, (2048, 1280), (2048.0, 1280.0), (0.0, 0.0)) for p in range(3)]
    for i in range(n):
        projs, labels = [], []
        for m in metas:
            k = int(rng.normal(0.007, 0.002) * m.total_voxels)
            idx = np.unique(rng.integers(0, m.total_voxels, max(k, 1), dtype=np.int64)).astype(np.uint64)
            val = (5 + rng.gamma(2.0, 3.0, idx.size)).astype(np.float32)
            projs.append(SparseProjection(m, idx, val))
            labels.append(SparseProjection(m, idx, rng.integers(0, 3, idx.size).astype(np.float32)))
        yield Event(EventID(1, 0, i), {KEY: projs, "sparse2d/sbnd_cosmicseg": labels})


def make_file(n: int, seed: int, cache: Path) -> tuple[Path, str]:
    cache.mkdir(parents=True, exist_ok=True)
    try:
        from tpcflow.sim.sbnd import generate_file
    except ImportError:
        generate_file = None
    source = "sim" if generate_file is not None else "fallback"
    path = cache / f"larcv3_read_{source}_{n}_{seed}.h5"
    if not path.exists():
        t0 = time.perf_counter()
        if generate_file is not None:
            generate_file(path, n, seed)
        else:
            write_larcv3(path, _fallback_events(n, seed))
        print(f"# generated {path} ({source}) in {time.perf_counter() - t0:.1f} s")
    return path, source


def naive_dense(path: Path) -> tuple[int, int]:
    """Per-event h5py loop, the way one writes it without a reader: returns (events, dense bytes)."""
    n_bytes = 0
    with h5py.File(path, "r") as f:
        g = f[GROUP]
        ext, vext, meta, vox = g["extents"], g["voxel_extents"], g["image_meta"], g["voxels"]
        n = ext.shape[0]
        for i in range(n):
            e = ext[i]
            first, count = int(e["first"]), int(e["N"])
            ve = vext[first : first + count]
            me = meta[first : first + count]
            shape = tuple(int(v) for v in me[0]["number_of_voxels"])
            dense = np.zeros((count, *shape), np.float32)
            for p in range(count):
                a, c = int(ve[p]["first"]), int(ve[p]["N"])
                v = vox[a : a + c]
                dense[p].reshape(-1)[v["id"].astype(np.int64)] = v["value"]
            n_bytes += dense.nbytes
    return n, n_bytes


def ours_dense(path: Path, block: int) -> tuple[int, int]:
    n_bytes = 0
    with open_larcv3(path, products=[KEY]) as r:
        n = len(r)
        buf, prev = None, None
        for start in range(0, n, block):
            blk = r.read_sparse_block(KEY, start, min(n, start + block))
            shape = (*blk.counts.shape, *blk.metas[0].number_of_voxels)
            if buf is None or buf.shape != shape:
                buf, prev = np.empty(shape, np.float32), None
            blk.to_dense(out=buf, previous=prev)  # reuse the buffer: zero only the last block's voxels
            prev = blk
            n_bytes += buf.nbytes
    return n, n_bytes


def raw_voxels(path: Path) -> tuple[int, int]:
    """Raw h5py read of the whole voxels dataset (no per-entry split): (events, voxel bytes)."""
    with h5py.File(path, "r") as f:
        d = f[GROUP]["voxels"]
        arr = d[()]
        return f[GROUP]["extents"].shape[0], arr.nbytes


def ours_sparse(path: Path, block: int) -> tuple[int, int]:
    n_bytes = 0
    with open_larcv3(path, products=[KEY]) as r:
        n = len(r)
        for start in range(0, n, block):
            blk = r.read_sparse_block(KEY, start, min(n, start + block))
            n_bytes += blk.index.size * 16
    return n, n_bytes


def ours_events(path: Path, block: int) -> tuple[int, int]:
    """read_range (full Event objects) without densifying."""
    n_bytes = 0
    with open_larcv3(path, products=[KEY]) as r:
        n = len(r)
        for start in range(0, n, block):
            for ev in r.read_range(start, min(n, start + block)):
                n_bytes += sum(len(p) for p in ev.products[KEY]) * 16
    return n, n_bytes


def best_of(fns: dict, repeat: int) -> dict:
    """Run every measurement ``repeat`` times, interleaved; keep the best (events/s, MB/s) of each."""
    rates: dict = {name: [] for name in fns}
    for _ in range(repeat):
        for name, (fn, args) in fns.items():
            t0 = time.perf_counter()
            n, nbytes = fn(*args)
            dt = time.perf_counter() - t0
            rates[name].append((n / dt, nbytes / dt / 1e6))
    return {name: max(r) for name, r in rates.items()}


def bench(name: str, ours: tuple[float, float], base: tuple[float, float], unit_index: int = 0) -> None:
    units = ("events/s", "MB/s")
    ratio = ours[unit_index] / base[unit_index]
    print(f"BENCH {name} {ours[unit_index]:.2f} {units[unit_index]} baseline={base[unit_index]:.2f} ratio={ratio:.2f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1000, help="events in the generated file (default: %(default)s)")
    ap.add_argument("--quick", action="store_true", help="100 events (default: %(default)s)")
    ap.add_argument("--block", type=int, default=1, help="entries per read_sparse_block call (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=3, help="passes per measurement, best kept (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=20240611, help="generator seed (default: %(default)s)")
    ap.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("TPCFLOW_BENCH_DIR", Path(tempfile.gettempdir()) / "tpcflow-bench")),
        help="where the generated file is cached (default: %(default)s)",
    )
    ap.add_argument("--threads", type=int, default=None,
                    help="inflate threads of the direct chunk reads, sets TPCFLOW_IO_THREADS (default: min(4, CPUs))")
    args = ap.parse_args(argv)
    if args.threads is not None:
        os.environ["TPCFLOW_IO_THREADS"] = str(args.threads)
    n = 100 if args.quick else args.events
    repeat = args.repeat
    path, source = make_file(n, args.seed, args.cache_dir)
    with open_larcv3(path, products=[KEY]) as r:
        blk = r.read_sparse_block(KEY, 0, len(r))
        occ = blk.index.size / (blk.counts.size * blk.metas[0].total_voxels)
        print(f"# file {path} ({source}): {len(r)} entries, {blk.index.size} voxels, occupancy {occ:.4%}, "
              f"{path.stat().st_size / 1e6:.1f} MB on disk")  # fmt: skip
    raw_voxels(path)  # warm the page cache
    res = best_of(
        {
            "naive": (naive_dense, (path,)),
            "dense": (ours_dense, (path, args.block)),
            "raw": (raw_voxels, (path,)),
            "sparse": (ours_sparse, (path, args.block)),
            "events": (ours_events, (path, args.block)),
        },
        repeat,
    )
    naive, dense, raw, sparse, events = (res[k] for k in ("naive", "dense", "raw", "sparse", "events"))
    print(f"# load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, inflate threads "
          f"{os.environ.get('TPCFLOW_IO_THREADS', 'default')}")  # fmt: skip
    print(f"# dense: ours {dense[0]:.1f} ev/s {dense[1]:.0f} MB/s | naive {naive[0]:.1f} ev/s {naive[1]:.0f} MB/s")
    print(f"# sparse: block {sparse[0]:.1f} ev/s {sparse[1]:.0f} MB/s | read_range {events[0]:.1f} ev/s | "
          f"raw voxels {raw[0]:.1f} ev/s {raw[1]:.0f} MB/s")  # fmt: skip
    bench("larcv3_read_dense_events_per_s", dense, naive, 0)
    bench("larcv3_read_dense_MB_per_s", dense, naive, 1)
    bench("larcv3_read_sparse_block_MB_per_s", sparse, raw, 1)
    bench("larcv3_read_range_events_MB_per_s", events, raw, 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
