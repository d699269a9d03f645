"""Benchmark: larcv1 / larcv2 ROOT images, read by entry, against raw uproot; bytes on the wire.

For the real MicroBooNE larcv1 file (3 wire planes of 1008 x 3456) and the larcv2 example file
(5 events of 3 x 512 x 512), in the same run and process:

* read rate: ``iterate_image2d`` (images shaped column-major, metas mapped, event ids) against
  the baseline, uproot's ``tree.arrays`` of the same branches (``library="np"``, no shaping);
* peak memory (tracemalloc, numpy allocations included) of reading the file entry by entry
  (``step_size=1``) against the baseline, one whole-tree ``tree.arrays`` read;
* bytes on the wire per event for the MDP codec: the dense float32 planes (baseline) against
  sparse COO (non-zero pixels) and sparse COO compressed with lz4;
* the whole file through ``submit`` (a broker with a trivial module network as its local worker,
  larcv3 output written) against the baseline: the same reader and network called in a plain
  loop, no service and no output file (so the ratio is what the service path costs).

Rates are events/s, best of N repeats (warm page cache).  Run:
``python benchmarks/bench_larcv_root.py [--quick]``.  Each figure ends with one line
``BENCH <name> <value> <unit> baseline=<value> ratio=<x>``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import uproot

from tpcflow.io.larcv_root import iterate_image2d
from tpcflow.serve import codec

FILES = {"larcv1": ("larcv1/out_larcv_test.root", "wire"), "larcv2": ("larcv2/example_larcv.root", "wire")}


def data_dir() -> Path:
    return Path(os.environ.get("TPCFLOW_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def bench(name: str, value: float, unit: str, baseline: float, higher_is_better: bool = True) -> None:
    ratio = value / baseline if higher_is_better else baseline / value
    print(f"BENCH {name} {value:.4g} {unit} baseline={baseline:.4g} ratio={ratio:.2f}")


def raw_read(path: Path, producer: str):
    with uproot.open(path) as f:
        tree = f[f"image2d_{producer}_tree"]
        pre = f"image2d_{producer}_branch/_image_v/_image_v."
        keys = [k for k in tree.keys() if k.startswith(pre) and (k.endswith("_img") or "_meta." in k)]
        return tree.arrays(keys, library="np")


def ours_read(path: Path, producer: str, step: int = 4) -> int:
    return sum(len(e.images) for e in iterate_image2d(path, producer, step_size=step))


def best_rate(fn, n_events: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n_events / best


def peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def wire_bytes(path: Path, producer: str) -> tuple[float, float, float]:
    """Mean bytes per event: dense float32, sparse COO, sparse COO + lz4 (MDP codec frames)."""
    dense = coo = lz4 = 0
    n = 0
    for e in iterate_image2d(path, producer, step_size=1):
        for im in e.images:
            dense += sum(len(bytes(f)) for f in codec.encode(im, name="plane"))
            flat = im.reshape(-1)
            index = np.flatnonzero(flat).astype(np.uint64)
            coo += sum(len(bytes(f)) for f in codec.encode_coo(index, flat[index], im.shape, name="plane"))
            lz4 += sum(len(bytes(f)) for f in codec.encode_coo(index, flat[index], im.shape, name="plane",
                                                               compression="lz4"))
        n += 1
    return dense / n, coo / n, lz4 / n


TRIVIAL = "import numpy as np\ndef process_net(images):\n    return (np.asarray(images) > 10).astype(np.int64)\n"


def submit_rate(path: Path, producer: str, n: int, repeats: int, tmp: Path) -> tuple[float, float]:
    """(events/s through submit, events/s of the plain loop) for the whole file."""
    from tpcflow.io.larcv_root_reader import RootImageReader
    from tpcflow.serve.mdp.inprocess import segment_via_broker

    module = tmp / "trivial.py"
    module.write_text(TRIVIAL)
    ns: dict = {}
    exec(TRIVIAL, ns)

    def through_service():
        out = tmp / "out.h5"
        out.unlink(missing_ok=True)
        segment_via_broker(module=module, inputs=[path], output=out, producer=producer, progress=False)

    def plain_loop():
        reader = RootImageReader([path], producer)
        for e in range(len(reader)):
            planes = reader.read(e).products[reader.keys[0]]
            for p in planes:
                ns["process_net"](p.to_dense()[None, None])

    return best_rate(through_service, n, repeats), best_rate(plain_loop, n, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    args = ap.parse_args()
    repeats = 2 if args.quick else 5
    for tag, (rel, producer) in FILES.items():
        path = data_dir() / rel
        if not path.is_file():
            print(f"skip {tag}: {path} not found (set TPCFLOW_DATA)")
            continue
        with uproot.open(path) as f:
            n = f[f"image2d_{producer}_tree"].num_entries
        ours_read(path, producer), raw_read(path, producer)  # warm the page cache and imports
        ours = best_rate(lambda: ours_read(path, producer), n, repeats)
        base = best_rate(lambda: raw_read(path, producer), n, repeats)
        bench(f"larcv_root_read_{tag}", ours, "events/s", base)
        streamed = peak_bytes(lambda: ours_read(path, producer, step=1))
        whole = peak_bytes(lambda: raw_read(path, producer))
        bench(f"larcv_root_peak_memory_{tag}", streamed / 1e6, "MB", whole / 1e6, higher_is_better=False)
        dense, coo, lz4 = wire_bytes(path, producer)
        bench(f"wire_bytes_sparse_{tag}", coo / 1e6, "MB/event", dense / 1e6, higher_is_better=False)
        bench(f"wire_bytes_sparse_lz4_{tag}", lz4 / 1e6, "MB/event", dense / 1e6, higher_is_better=False)
        with tempfile.TemporaryDirectory() as tmp:
            ours, base = submit_rate(path, producer, n, repeats, Path(tmp))
        bench(f"submit_{tag}", ours, "events/s", base)


if __name__ == "__main__":
    main()
