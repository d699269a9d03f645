"""Benchmark: ROOT TTrees -> padded, normalised matrices (DataGenerator) vs raw uproot ``tree.arrays()``.

For each file of ../shared/data/root (or $TPCFLOW_DATA/root), in the same run and process:

* baseline: ``tree.arrays(<the same numeric branches>, library="ak")`` on an open file
  (``array_cache=None``), i.e. what uproot itself costs;
* ours: ``DataGenerator.iterate("all")`` with precomputed specs: read the same branches, pad
  every jagged branch to its jdim, build the mask, min/max normalise, one (N, W) float32 matrix;
* a second baseline, uproot's fastest form of the same read: ``library="np"`` for the flat
  branches and ``library="ak"`` for the jagged ones (what the generator itself does);
* the first pass (specs collection, including opening the file) rate, also against the baseline;
* NanoAOD only: padding every jagged branch with ``ak.pad_none``/``ak.fill_none``/``ak.to_numpy``
  against tpcflow's offsets scatter (``pad_jagged``), on arrays already in memory.

Rates are events/s, best of N repeats (warm page cache). Run: ``python benchmarks/bench_root.py [--quick]``.
Each figure ends with one line ``BENCH <name> <value> <unit> baseline=<value> ratio=<x>``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from tpcflow.io.root import DataReader
from tpcflow.loader.root_generator import DataGenerator, pad_jagged

FILES = {
    "nanoaod": "nanoAOD_2015_CMS_Open_Data_ttbar.root",
    "hzz": "uproot-HZZ.root",
    "zmumu": "uproot-Zmumu.root",
}


def data_dir() -> Path:
    env = os.environ.get("TPCFLOW_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def best_rate(fn, nevents: int, repeats: int) -> float:
    fn()  # warm up
    return nevents / min(_timed(fn) for _ in range(repeats))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(fns: dict, nevents: int, repeats: int) -> dict:
    """Best events/s of each function, timing them in turn within every repeat (fair under load)."""
    for fn in fns.values():
        fn()  # warm up
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for key, fn in fns.items():
            best[key] = min(best[key], _timed(fn))
    return {key: nevents / t for key, t in best.items()}


def bench_file(tag: str, path: Path, repeats: int) -> dict:
    reader = DataReader(path)
    names = list(reader.branches)
    n = reader.num_entries
    tree = uproot.open(path, array_cache=None)[reader.tree_name]
    gen = DataGenerator([path], specs=reader.first_pass(), chunk_size=max(n, 1), shuffle=False)
    flat = [k for k, b in reader.branches.items() if b.kind == "flat"]
    other = [k for k in names if k not in set(flat)]

    def ours():
        for chunk in gen.iterate("all"):
            assert chunk.x.shape == (n, gen.width)

    def split_read():  # uproot's fastest form: numpy for flat branches, awkward for jagged ones
        tree.arrays(flat, library="np") if flat else None
        tree.arrays(other, library="ak") if other else None

    r = interleaved({"raw": lambda: tree.arrays(names, library="ak"), "split": split_read, "ours": ours,
                     "first": lambda: DataReader(path).first_pass()}, n, repeats)
    print(f"# {tag}: {n} events, {len(names)} branches, row width {gen.width}")
    print(f"BENCH root_{tag}_padded_normalised {r['ours']:.0f} ev/s baseline={r['raw']:.0f} "
          f"ratio={r['ours'] / r['raw']:.3f}")
    print(f"BENCH root_{tag}_padded_normalised_vs_np_read {r['ours']:.0f} ev/s baseline={r['split']:.0f} "
          f"ratio={r['ours'] / r['split']:.3f}")
    print(f"BENCH root_{tag}_first_pass {r['first']:.0f} ev/s baseline={r['raw']:.0f} "
          f"ratio={r['first'] / r['raw']:.3f}")
    return r


def bench_padding(path: Path, repeats: int) -> None:
    reader = DataReader(path)
    specs = reader.first_pass()
    arrays = reader.read()
    jag = [(name, specs.branches[name].jdim) for name in specs.jagged if specs.branches[name].jdim]
    n = reader.num_entries

    def with_ak():
        for name, j in jag:
            ak.to_numpy(ak.fill_none(ak.pad_none(arrays[name], j, clip=True), 0.0)).astype(np.float32)

    def with_offsets():
        for name, j in jag:
            pad_jagged(arrays[name], j)

    base = best_rate(with_ak, n, repeats)
    ours = best_rate(with_offsets, n, repeats)
    print(f"BENCH root_nanoaod_pad_jagged {ours:.0f} ev/s baseline={base:.0f} ratio={ours / base:.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 repeats instead of 15")
    args = ap.parse_args()
    repeats = 3 if args.quick else 15
    root = data_dir() / "root"
    for tag, name in FILES.items():
        if (root / name).exists():
            bench_file(tag, root / name, repeats)
        else:
            print(f"# skip {tag}: {root / name} not found (set TPCFLOW_DATA)")
    if (root / FILES["nanoaod"]).exists():
        bench_padding(root / FILES["nanoaod"], repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
