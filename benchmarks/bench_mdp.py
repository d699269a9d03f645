"""MDP inference service over loopback: latency, throughput, scaling and payload size.

All in one run, on 127.0.0.1 TCP, every server role in its own process (so that no two roles
share a GIL) and the load generator in this process:

1. p50/p99 latency and req/s for 1 KB and 10 MB echo requests through
   * raw pyzmq REQ/REP (no broker: the floor),
   * a C forwarder, ``zmq.proxy`` (ROUTER/DEALER) between REQ and REP: no Python in the broker
     process, so the floor of any design that puts a broker process in the path,
   * majortomo 0.2.0 (its Broker + 4 Workers + Client). Its client allows one request in flight;
     ``majortomo_concurrent`` runs 16 (1 KB) or 2 (10 MB) of its clients in threads, its best req/s,
   * tpcflow (our Broker + Worker + Client) with the worker in its own process, one request in
     flight (a worker with the default single slot) and pipelined (16 in flight for 1 KB, 2 for
     10 MB, to a worker with 16 slots, i.e. accepting 16 requests at once, as a batching worker does),
   * tpcflow ``hosted``: the worker in the broker's process (``Broker.add_local_worker``), as
     ``tpcflow worker --bind`` runs it; one in flight and pipelined with the handler inline, and
     one in flight through a batch thread (``hosted_batched``, the path of a served network).
   All are measured in 10 alternating windows, so that load from other jobs on a shared machine
   falls on all of them alike.
2. Throughput of our broker with 1, 2 and 4 worker processes running a sleep-based model (20 ms).
3. Bytes per real 3-plane event of ``cosmic_tagging_light.h5`` and encode/decode time as dense
   float32, sparse COO, and sparse COO compressed (lz4, zstd).

Targets (issue 5): 1 KB p50 within 1.5x raw REQ/REP; >= 2x majortomo's req/s; >= 1.5x majortomo's
10 MB throughput; sparse compressed >= 20x smaller than dense float32.

Run: ``python benchmarks/bench_mdp.py`` (``--quick`` for a short run). The machine is shared: numbers
from a busy 2-core box are noisy, compare ratios rather than absolutes.
Prints ``BENCH <name> <value> <unit> baseline=<value> ratio=<x>`` lines.
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
DATA = Path(os.environ.get("TPCFLOW_DATA", HERE.parents[2] / "shared" / "data"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------- roles
def role_rep(endpoint: str) -> None:
    import zmq

    s = zmq.Context().socket(zmq.REP)
    s.bind(endpoint)
    while True:
        s.send_multipart(s.recv_multipart(copy=False), copy=False)


def role_cproxy(endpoint: str) -> None:
    """REQ clients -> ROUTER | zmq.proxy (C) | DEALER -> REP: a broker hop with no Python in it."""
    import threading

    import zmq

    ctx = zmq.Context()
    front, back = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    front.bind(endpoint)
    back.bind("tcp://127.0.0.1:*")
    back_ep = back.getsockopt_string(zmq.LAST_ENDPOINT)

    def rep():  # its own process would be fairer still; a thread keeps the role count down
        s = zmq.Context().socket(zmq.REP)
        s.connect(back_ep)
        while True:
            s.send_multipart(s.recv_multipart(copy=False), copy=False)

    threading.Thread(target=rep, daemon=True).start()
    zmq.proxy(front, back)


def role_majortomo_broker(endpoint: str) -> None:
    import logging

    from majortomo.broker import Broker

    logging.disable(logging.CRITICAL)
    Broker(bind=endpoint, heartbeat_interval=1.0, heartbeat_timeout=10.0).run()


def role_majortomo_worker(endpoint: str) -> None:
    import logging

    import majortomo

    logging.disable(logging.CRITICAL)
    w = majortomo.Worker(endpoint, b"echo", heartbeat_interval=1.0, heartbeat_timeout=10.0)
    w.connect()
    while True:
        client, request = w.wait_for_request()
        w.send_reply_final(client, request)


def role_our_broker(endpoint: str) -> None:
    from tpcflow.serve.mdp import Broker

    Broker(endpoint, heartbeat_interval=1.0).run(freeze_gc=True)  # as `tpcflow broker` runs it


def role_our_worker(endpoint: str, service: str = "echo", sleep: float = 0.0, slots: int = 1) -> None:
    from tpcflow.serve.mdp import Worker

    if sleep:
        def handler(bodies):  # a "model" that takes `sleep` seconds per batch
            time.sleep(sleep)
            return bodies
        Worker(endpoint, service, handler, heartbeat_interval=1.0).run()
    else:
        # echo: reply with the received frames themselves (zero-copy); `slots` requests at once
        Worker(endpoint, service, lambda bodies: bodies, inline=True, slots=slots, heartbeat_interval=1.0).run()


def role_hosted(endpoint: str) -> None:
    """Our broker with echo workers in its own process (``tpcflow worker --bind``).

    ``echo`` / ``echo16`` run inline in the broker thread, as the REP server and our separate
    worker run theirs in their socket thread; ``echo_batched`` goes through a batch thread, as a
    network served with dynamic batching does.
    """
    from tpcflow.serve.mdp import Broker

    broker = Broker(endpoint, heartbeat_interval=1.0)
    broker.add_local_worker("echo", lambda bodies: bodies, inline=True)
    broker.add_local_worker("echo16", lambda bodies: bodies, slots=16, inline=True)
    broker.add_local_worker("echo_batched", lambda bodies: bodies, slots=16, max_batch=16)
    broker.run(freeze_gc=True)


ROLES = {"rep": role_rep, "cproxy": role_cproxy, "mbroker": role_majortomo_broker, "mworker": role_majortomo_worker,
         "broker": role_our_broker, "worker": role_our_worker, "hosted": role_hosted}


def spawn(role: str, endpoint: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HERE), "--role", role, "--endpoint", endpoint, *extra])


# ---------------------------------------------------------------------------------------------- load
def stats(lat: list[float], wall: float) -> dict:
    a = np.array(lat)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "rps": len(a) / wall}


class Raw:
    """pyzmq REQ -> REP, one request in flight."""

    def __init__(self, endpoint: str):
        import zmq

        self.s = zmq.Context.instance().socket(zmq.REQ)
        self.s.connect(endpoint)

    def run(self, payload: bytes, n: int, lat: list) -> None:
        s = self.s
        for _ in range(n):
            t = time.perf_counter()
            s.send(payload, copy=False)
            s.recv(copy=False)
            lat.append(time.perf_counter() - t)


class Majortomo:
    """majortomo Client (one request in flight by design)."""

    def __init__(self, endpoint: str):
        import majortomo

        self.c = majortomo.Client(endpoint)
        self.c.connect()

    def run(self, payload: bytes, n: int, lat: list) -> None:
        c = self.c
        for _ in range(n):
            t = time.perf_counter()
            c.send(b"echo", payload)
            c.recv_all_as_list(timeout=30)
            lat.append(time.perf_counter() - t)


class Concurrent:
    """``n`` clients of one kind, each in its own thread (pyzmq releases the GIL while waiting)."""

    def __init__(self, make, n: int):
        self.clients = [make() for _ in range(n)]

    def run(self, payload: bytes, n: int, lat: list) -> None:
        import threading

        share = max(1, n // len(self.clients))
        threads = [threading.Thread(target=c.run, args=(payload, share, lat)) for c in self.clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


class Ours:
    """tpcflow Client, ``in_flight`` requests outstanding (zero-copy replies)."""

    def __init__(self, endpoint: str, in_flight: int = 1, service: str = "echo"):
        from tpcflow.serve.mdp import Client

        self.c = Client(endpoint, timeout=60, copy=False)
        self.c.wait_for_service(service, 60)
        self.in_flight, self.service = in_flight, service

    def run(self, payload: bytes, n: int, lat: list) -> None:
        sent_at: dict = {}

        def bodies():
            for i in range(n):
                sent_at[i] = time.perf_counter()
                yield i, [payload]

        for key, _reply in self.c.map(self.service, bodies(), max_in_flight=self.in_flight):
            lat.append(time.perf_counter() - sent_at.pop(key))


def interleaved(systems: dict, payload: bytes, n: int, rounds: int) -> dict:
    """Measure every system in ``rounds`` alternating windows (a busy shared box slows all alike)."""
    lat = {k: [] for k in systems}
    wall = dict.fromkeys(systems, 0.0)
    for sysobj in systems.values():  # warm-up
        sysobj.run(payload, max(2, min(50, n // 10)), [])
    names = list(systems)
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            systems[k].run(payload, max(1, n // rounds), lat[k])
            wall[k] += time.perf_counter() - t
    return {k: stats(lat[k], wall[k]) for k in systems}


def bench_ours(endpoint: str, payload: bytes, n: int, in_flight: int = 1, service: str = "echo") -> dict:
    lat: list = []
    sysobj = Ours(endpoint, in_flight, service)
    t = time.perf_counter()
    sysobj.run(payload, n, lat)
    return stats(lat, time.perf_counter() - t)


def wait_port(endpoint: str) -> None:
    host, port = endpoint.rsplit(":", 1)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", int(port))) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {endpoint}")


def bench(name: str, value: float, unit: str, baseline: float, lower_is_better: bool = False) -> None:
    ratio = (baseline / value if lower_is_better else value / baseline) if baseline and value else float("nan")
    print(f"BENCH {name} {value:.4g} {unit} baseline={baseline:.4g} ratio={ratio:.3g}", flush=True)


def echo_benchmarks(quick: bool) -> None:
    sizes = {"1KB": (1024, 500 if quick else 5000), "10MB": (10 * 1024 * 1024, 20 if quick else 60)}
    procs = []
    eps = {k: f"tcp://127.0.0.1:{free_port()}" for k in ("raw", "cproxy", "mt", "ours", "hosted")}
    try:
        for role, k in (("rep", "raw"), ("cproxy", "cproxy"), ("mbroker", "mt"), ("broker", "ours"),
                        ("hosted", "hosted")):
            procs.append(spawn(role, eps[k]))
        for k in eps:
            wait_port(eps[k])
        procs += [spawn("mworker", eps["mt"]) for _ in range(4)]
        procs.append(spawn("worker", eps["ours"]))  # service "echo", 1 slot (the default)
        procs.append(spawn("worker", eps["ours"], "--service", "echo16", "--slots", "16"))
        time.sleep(1.0)
        for label, (size, n) in sizes.items():
            payload = os.urandom(size)
            pipe = 16 if size < 1e6 else 2
            systems = {
                "raw": Raw(eps["raw"]), "cproxy": Raw(eps["cproxy"]), "majortomo": Majortomo(eps["mt"]),
                "majortomo_concurrent": Concurrent(lambda: Majortomo(eps["mt"]), pipe),
                "ours": Ours(eps["ours"]), "ours_pipelined": Ours(eps["ours"], in_flight=pipe, service="echo16"),
                "hosted": Ours(eps["hosted"]), "hosted_pipelined": Ours(eps["hosted"], in_flight=pipe, service="echo16"),
                "hosted_batched": Ours(eps["hosted"], service="echo_batched"),
            }
            res = interleaved(systems, payload, n, rounds=10)
            for k, r in res.items():
                print(f"# {label:>5} {k:>20}: p50 {r['p50'] * 1e3:8.3f} ms  p99 {r['p99'] * 1e3:8.3f} ms  "
                      f"{r['rps']:9.1f} req/s  {r['rps'] * size / 1e6:8.1f} MB/s", flush=True)
            raw, mt, mtc = res["raw"], res["majortomo"], res["majortomo_concurrent"]
            for k in ("ours", "hosted"):
                name = "" if k == "ours" else "_hosted"
                bench(f"mdp_{label}_p50_latency{name}_vs_raw_reqrep", res[k]["p50"] * 1e6, "us", raw["p50"] * 1e6,
                      lower_is_better=True)
                bench(f"mdp_{label}_p50_latency{name}_vs_majortomo", res[k]["p50"] * 1e6, "us", mt["p50"] * 1e6,
                      lower_is_better=True)
                bench(f"mdp_{label}_p99_latency{name}_vs_majortomo", res[k]["p99"] * 1e6, "us", mt["p99"] * 1e6,
                      lower_is_better=True)
                bench(f"mdp_{label}_reqs{name}_1_in_flight_vs_majortomo", res[k]["rps"], "req/s", mt["rps"])
                piped = res[f"{k}_pipelined"]["rps"]
                bench(f"mdp_{label}_reqs{name}_pipelined_vs_majortomo", piped, "req/s", mt["rps"])
                bench(f"mdp_{label}_reqs{name}_pipelined_vs_majortomo_concurrent", piped, "req/s", mtc["rps"])
                if size > 1e6:
                    best = max(res[k]["rps"], piped)
                    bench(f"mdp_{label}_throughput{name}_vs_majortomo", best * size / 1e6, "MB/s",
                          max(mt["rps"], mtc["rps"]) * size / 1e6)
            bench(f"mdp_{label}_p50_latency_hosted_batched_vs_raw_reqrep", res["hosted_batched"]["p50"] * 1e6, "us",
                  raw["p50"] * 1e6, lower_is_better=True)
            bench(f"mdp_{label}_p50_latency_cproxy_floor_vs_raw_reqrep", res["cproxy"]["p50"] * 1e6, "us",
                  raw["p50"] * 1e6, lower_is_better=True)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def scaling_benchmark(quick: bool) -> None:
    ep = f"tcp://127.0.0.1:{free_port()}"
    n = 100 if quick else 400
    sleep = 0.02
    broker = spawn("broker", ep)
    workers = []
    rates = {}
    try:
        wait_port(ep)
        for count in (1, 2, 4):
            while len(workers) < count:
                workers.append(spawn("worker", ep, "--service", "sleep", "--sleep", str(sleep)))
            from tpcflow.serve.mdp import Client

            with Client(ep, timeout=30) as c:
                end = time.monotonic() + 60
                while c.stats("sleep")["services"].get("sleep", {}).get("workers", 0) < count:
                    if time.monotonic() > end:
                        raise RuntimeError("workers did not register")
                    time.sleep(0.05)
            rates[count] = bench_ours(ep, b"x" * 1024, n, in_flight=16, service="sleep")["rps"]
            print(f"# sleep model {sleep * 1e3:.0f} ms, {count} worker(s): {rates[count]:.1f} req/s "
                  f"(ideal {count / sleep:.0f})", flush=True)
            bench(f"mdp_scaling_{count}_workers", rates[count], "req/s", rates[1])
    finally:
        for p in [*workers, broker]:
            p.kill()
            p.wait()


def payload_benchmark(quick: bool) -> None:
    from tpcflow.io import open_larcv3
    from tpcflow.serve import codec

    path = DATA / "larcv3" / "cosmic_tagging_light.h5"
    if not path.exists():
        print(f"# {path} not found: payload benchmark skipped", flush=True)
        return
    r = open_larcv3(path, products=["sparse2d/sbndwire"])
    events = [r.read(i).products["sparse2d/sbndwire"] for i in range(len(r))]
    reps = 2 if quick else 5

    def measure(encode):
        sizes, enc_ms, dec_ms = [], [], []
        for planes in events:
            for _ in range(reps):
                t = time.perf_counter()
                frames = encode(planes)
                enc_ms.append((time.perf_counter() - t) * 1e3)
                received = [bytes(memoryview(f)) for f in frames]  # as a receiver holds them (not timed)
                t = time.perf_counter()
                codec.decode_all(received)
                dec_ms.append((time.perf_counter() - t) * 1e3)
            sizes.append(sum(memoryview(f).nbytes for f in frames))
        return float(np.mean(sizes)), float(np.median(enc_ms)), float(np.median(dec_ms))

    variants = {
        "dense_float32": lambda planes: [f for p in planes for f in codec.encode(p.to_dense())],
        "sparse": lambda planes: [f for p in planes for f in codec.encode_coo(p.index, p.values, p.meta.number_of_voxels)],
        "sparse_lz4": lambda planes: [f for p in planes for f in codec.encode_coo(
            p.index, p.values, p.meta.number_of_voxels, compression="lz4")],
        "sparse_zstd": lambda planes: [f for p in planes for f in codec.encode_coo(
            p.index, p.values, p.meta.number_of_voxels, compression="zstd")],
    }
    res = {k: measure(v) for k, v in variants.items()}
    dense = res["dense_float32"][0]
    for k, (size, enc, dec) in res.items():
        print(f"# payload {k:>14}: {size / 1e3:10.1f} kB/event  encode {enc:7.2f} ms  decode {dec:7.2f} ms", flush=True)
        bench(f"mdp_event_bytes_{k}", size, "bytes", dense, lower_is_better=True)
        bench(f"mdp_event_encode_ms_{k}", enc, "ms", res["dense_float32"][1], lower_is_better=True)
        bench(f"mdp_event_decode_ms_{k}", dec, "ms", res["dense_float32"][2], lower_is_better=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    ap.add_argument("--role", choices=sorted(ROLES), help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    ap.add_argument("--service", default="echo", help=argparse.SUPPRESS)
    ap.add_argument("--sleep", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--slots", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--only", choices=["echo", "scaling", "payload"], default=None, help="run one part only")
    args = ap.parse_args()
    if args.role:
        if args.role == "worker":
            role_our_worker(args.endpoint, args.service, args.sleep, args.slots)
        else:
            ROLES[args.role](args.endpoint)
        return 0
    if args.only in (None, "payload"):
        payload_benchmark(args.quick)
    # the load generator has numpy/h5py loaded: keep full GC passes out of every system's latency
    gc.collect()
    gc.freeze()
    if args.only in (None, "echo"):
        echo_benchmarks(args.quick)
    if args.only in (None, "scaling"):
        scaling_benchmark(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
