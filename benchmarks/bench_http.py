"""HTTP model server throughput and latency: POST /json on a small MLP, batching on vs off.

The server (``tpcflow serve-http``, uvicorn, one process) runs in a subprocess on
127.0.0.1; the load generator is a lean asyncio HTTP/1.1 client with keep-alive
connections (``--procs`` processes), so that it takes as little of the 2 cores
as possible from the server.  For each number of concurrent clients (1, 32, 128)
it measures req/s, p50/p99 latency and the server's CPU time per request with
dynamic batching on, and with it off (one model call per request) as the
baseline measured in the same run; the two servers run side by side and are
measured in alternating windows, so that a busy shared machine slows both alike.
The TFaaS line compares the better of the two at 32 clients with TFaaS's
published figure (not measured here).

For reference, TFaaS published about 400-480 req/s with 100-200 clients.

Run: ``python benchmarks/bench_http.py`` (``--quick`` for a short run).
Prints ``BENCH <name> <value> <unit> baseline=<value> ratio=<x>`` lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_FEATURES = 16
N_CLASSES = 4


def make_repository(root: Path) -> None:
    """Store a 16 -> 64 -> 64 -> 4 TorchScript MLP as model ``mlp``."""
    import torch

    from tpcflow.serve.http.repository import ModelRepository

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(N_FEATURES, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                              torch.nn.ReLU(), torch.nn.Linear(64, N_CLASSES)).eval()
    tmp = root.parent / "mlp.pt"
    torch.jit.save(torch.jit.script(net), str(tmp))
    params = {"name": "mlp", "keys": [f"f{i}" for i in range(N_FEATURES)], "input_shape": [N_FEATURES]}
    ModelRepository(root).add("mlp", params, tmp)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(models: Path, port: int, batching: bool, delay_ms: float) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tpcflow.cli.main", "serve-http", "--models", str(models), "--port", str(port),
           "--log-level", "warning", "--torch-threads", "1", "--max-delay-ms", str(delay_ms)]
    if not batching:
        cmd.append("--no-batching")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return proc
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not become ready in 60 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


async def _connection(port: int, request: bytes, t_start: float, t_end: float, latencies: list, errors: list):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while True:
            now = time.time()
            if now >= t_end:
                break
            t0 = time.perf_counter()
            writer.write(request)
            status = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            t1 = time.perf_counter()
            if not status.startswith(b"HTTP/1.1 200"):
                errors.append(status.decode().strip())
            elif now >= t_start:
                latencies.append(t1 - t0)
    finally:
        writer.close()


def _load_process(port: int, connections: int, t_start: float, t_end: float, seed: int, out) -> None:
    rng = np.random.default_rng(seed)
    keys = [f"f{i}" for i in range(N_FEATURES)]

    def request() -> bytes:
        body = json.dumps({"model": "mlp", "keys": keys, "values": rng.normal(size=N_FEATURES).round(4).tolist()})
        return (f"POST /json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n{body}").encode()

    async def main():
        latencies: list = []
        errors: list = []
        await asyncio.gather(*[_connection(port, request(), t_start, t_end, latencies, errors)
                               for _ in range(connections)])
        return latencies, errors

    latencies, errors = asyncio.run(main())
    out.send((latencies, errors[:5], len(errors)))
    out.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process [s] (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def measure(port: int, clients: int, procs: int, warmup: float, duration: float, server_pid: int) -> dict:
    procs = max(1, min(procs, clients))
    ctx = mp.get_context("spawn")
    pipes, workers = [], []
    t_start = time.time() + 1.0 + warmup  # 1 s for the processes to start
    t_end = t_start + duration
    for p in range(procs):
        n = clients // procs + (1 if p < clients % procs else 0)
        recv, send = ctx.Pipe(duplex=False)
        w = ctx.Process(target=_load_process, args=(port, n, t_start, t_end, p, send))
        w.start()
        pipes.append(recv)
        workers.append(w)
    latencies, errors, n_errors = [], [], 0
    time.sleep(max(0.0, t_start - time.time()))
    cpu0 = cpu_seconds(server_pid)
    time.sleep(max(0.0, t_end - time.time()))
    cpu1 = cpu_seconds(server_pid)
    for recv, w in zip(pipes, workers, strict=True):
        deadline = time.monotonic() + warmup + duration + 60
        while not recv.poll(0.2):
            if not w.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"load generator process failed (exit code {w.exitcode})")
        lat, err, n_err = recv.recv()
        latencies += lat
        errors += err
        n_errors += n_err
        w.join(timeout=10)
    if n_errors:
        raise RuntimeError(f"{n_errors} requests failed, e.g. {errors}")
    lat = np.array(latencies)
    return {"rps": len(lat) / duration, "p50_ms": float(np.percentile(lat, 50) * 1e3),
            "p99_ms": float(np.percentile(lat, 99) * 1e3), "n": len(lat),
            "server_cores": (cpu1 - cpu0) / duration, "cpu_us_per_req": (cpu1 - cpu0) / max(len(lat), 1) * 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short run (1 round of 1.5 s per point)")
    parser.add_argument("--duration", type=float, default=2.0, help="measured seconds per window")
    parser.add_argument("--rounds", type=int, default=3,
                        help="windows per point, alternating batching on/off (the median is reported)")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds per window")
    parser.add_argument("--clients", default="1,32,128", help="concurrent client counts")
    parser.add_argument("--procs", type=int, default=1, help="load generator processes")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="server max batch delay [ms] when batching")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.rounds = 1.5, 0.5, 1
    clients = [int(c) for c in args.clients.split(",")]
    import importlib.util

    impl = ("httptools" if importlib.util.find_spec("httptools") else "h11",
            "uvloop" if importlib.util.find_spec("uvloop") else "asyncio")
    print(f"# cores={os.cpu_count()} window={args.duration}s rounds={args.rounds} load-generator "
          f"processes={args.procs} uvicorn http={impl[0]} loop={impl[1]} (the load generator shares the cores "
          "with the server; uvicorn[standard] adds httptools and uvloop)")
    results: dict[tuple[bool, int], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        make_repository(models)
        servers = {}
        try:
            # both servers stay up; the idle one costs nothing, and alternating windows
            # spreads the load of a shared machine evenly over the two
            for batching in (True, False):
                port = free_port()
                servers[batching] = (port, start_server(models, port, batching, args.delay_ms))
            for c in clients:
                windows: dict[bool, list[dict]] = {True: [], False: []}
                for _ in range(args.rounds):
                    for batching in (True, False):
                        port, proc = servers[batching]
                        windows[batching].append(measure(port, c, args.procs, args.warmup, args.duration, proc.pid))
                for batching in (True, False):
                    ws = sorted(windows[batching], key=lambda w: w["rps"])
                    r = dict(ws[len(ws) // 2])
                    r["n"] = sum(w["n"] for w in ws)
                    results[(batching, c)] = r
                    print(f"# batching={'on ' if batching else 'off'} clients={c:4d} {r['rps']:8.0f} req/s "
                          f"p50={r['p50_ms']:7.2f} ms p99={r['p99_ms']:7.2f} ms (median window; {r['n']} requests; "
                          f"server used {r['server_cores']:.2f} cores, {r['cpu_us_per_req']:.0f} CPU-us/request)")
        finally:
            for _port, proc in servers.values():
                stop_server(proc)
    for c in clients:
        on, off = results[(True, c)], results[(False, c)]
        print(f"BENCH http_json_rps_c{c} {on['rps']:.0f} req/s baseline={off['rps']:.0f} "
              f"ratio={on['rps'] / off['rps']:.2f}")
        for q in ("p50_ms", "p99_ms"):
            print(f"BENCH http_json_{q[:3]}_c{c} {on[q]:.2f} ms baseline={off[q]:.2f} ratio={on[q] / off[q]:.2f}")
        print(f"BENCH http_json_cpu_per_req_c{c} {on['cpu_us_per_req']:.0f} us baseline={off['cpu_us_per_req']:.0f} "
              f"ratio={on['cpu_us_per_req'] / off['cpu_us_per_req']:.2f}")
    if 32 in clients:
        best = max(results[(True, 32)]["rps"], results[(False, 32)]["rps"])
        print(f"BENCH http_json_rps_c32_vs_tfaas {best:.0f} req/s baseline=440 ratio={best / 440:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
