"""Soak test (not CI): the MDP service and the HTTP server under failures and hostile load, for minutes.

For ``--minutes`` (default 30), in one run on loopback:

* an MDP broker (``tpcflow broker``) with ``--workers`` worker processes (``tpcflow worker --module``,
  a stand-in network that labels every voxel by its charge), one of them killed with SIGKILL and
  restarted every ``--kill-every`` seconds;
* ``--clients`` client threads sending the real SBND events of ``cosmic_tagging_light.h5`` through
  ``Client.map`` (each request keyed, its reply checked against its request);
* a ``tpcflow serve-http`` server with a small MLP, sent valid ``/json`` rows by one thread and
  hostile bodies (a 1 MB list of strings, deeply nested brackets) by another.

It reports, per minute, MDP requests served and their p99 latency, HTTP valid requests and their
p99 latency, and the resident memory of the broker and the HTTP server; at the end, requests
lost (sent, never answered after the client's retries: must be 0) and duplicated (a key answered
twice: must be 0). The baselines are the run's own first minute: ``BENCH`` lines compare the last
minute's p99 latency and memory with the first's (ratio = first / last for latency, so that
above 1 is better, and first / last for memory: below 1 means growth).

Run: ``python benchmarks/soak.py [--minutes 30] [--quick]`` (``--quick``: 2 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

NET = """import numpy as np

def process_net(images):                       # a stand-in network: cosmic where there is charge
    return (np.asarray(images) > 0).astype(np.int64)
"""


def data_dir() -> Path:
    return Path(os.environ.get("TPCFLOW_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process [MB], from /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def tpcflow(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tpcflow.cli.main", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, **kw)


class Stats:
    """Thread-safe per-minute counters and latencies."""

    def __init__(self, t0: float):
        self.t0 = t0
        self.lock = threading.Lock()
        self.lat = defaultdict(lambda: defaultdict(list))  # kind -> minute -> [s]
        self.count = defaultdict(int)
        self.seen: dict[int, int] = defaultdict(int)

    def add(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.lat[kind][int((time.monotonic() - self.t0) // 60)].append(seconds)
            self.count[kind] += 1


def mdp_client(endpoint: str, events, stats: Stats, stop: threading.Event, first_key: int) -> None:
    """Send the events in a loop; count every request the client gave up on (lost) and every key answered twice.

    A ``ServiceError`` is one request given up (out of attempts, or an error reply); the other
    requests of that ``map`` stay in flight and are answered in the next one, so the outstanding
    requests are tracked across calls.
    """
    from tpcflow.errors import ServiceError
    from tpcflow.serve.mdp import Client
    from tpcflow.serve.mdp.cosmic import decode_reply, encode_request

    key = first_key
    outstanding: dict[int, tuple] = {}  # key -> (event, sent at)
    with Client(endpoint, timeout=10, retries=3) as client:
        while not stop.is_set():
            batch = []
            for ev in events:
                outstanding[key] = (ev, time.monotonic())
                batch.append((key, encode_request(ev.event_id, ev.products["sparse2d/sbndwire"])))
                key += 1
            with stats.lock:
                stats.count["mdp_sent"] += len(batch)
            try:
                for k, reply in client.map("soak", batch, max_in_flight=4):
                    with stats.lock:
                        stats.seen[k] += 1
                    if k not in outstanding:
                        continue  # answered twice: counted by seen
                    ev, t = outstanding.pop(k)
                    _, labels, _ = decode_reply(reply)
                    if [len(x) for x in labels] != [len(p.index) for p in ev.products["sparse2d/sbndwire"]]:
                        stats.count["mdp_wrong"] += 1
                    stats.add("mdp", time.monotonic() - t)
            except ServiceError as err:
                with stats.lock:
                    stats.count["mdp_lost"] += 1
                    stats.count[f"mdp_lost: {str(err)[:60]}"] += 1
        with stats.lock:
            stats.count["mdp_in_flight_at_stop"] += len(outstanding)


def http_valid(url: str, stats: Stats, stop: threading.Event) -> None:
    import httpx

    body = {"model": "mlp", "keys": ["px", "py"], "values": [[1.0, 2.0]] * 8}
    with httpx.Client(base_url=url, timeout=10) as c:
        while not stop.is_set():
            t = time.monotonic()
            try:
                ok = c.post("/json", json=body).status_code == 200
            except httpx.HTTPError:
                ok = False
            stats.add("http" if ok else "http_failed", time.monotonic() - t)


def http_hostile(url: str, stats: Stats, stop: threading.Event) -> None:
    import httpx

    bodies = [json.dumps({"model": "mlp", "values": ["x"] * 150_000}).encode(),
              b'{"inputs": [{"name": "input0", "shape": [1], "datatype": "FP32", "data": ' + b"[" * 20000]
    with httpx.Client(base_url=url, timeout=30) as c:
        i = 0
        while not stop.is_set():
            path = "/json" if i % 2 == 0 else "/v2/models/mlp/infer"
            try:
                r = c.post(path, content=bodies[i % 2], headers={"content-type": "application/json"})
                stats.count[f"hostile_{r.status_code}"] += 1
            except httpx.HTTPError:
                stats.count["hostile_error"] += 1
            i += 1
            stop.wait(0.2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--quick", action="store_true", help="2 minutes")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--kill-every", type=float, default=15.0, help="seconds between worker kills")
    args = ap.parse_args()
    minutes = 2.0 if args.quick else args.minutes

    import torch

    from tpcflow.io import open_larcv3
    from tpcflow.serve.http.client import TFaaSClient

    with open_larcv3(data_dir() / "larcv3/cosmic_tagging_light.h5") as r:
        events = r.read_range(0, len(r))
    work = Path(tempfile.mkdtemp(prefix="tpcflow-soak-"))
    (work / "net.py").write_text(NET)
    mlp = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
    torch.jit.save(torch.jit.script(mlp), str(work / "mlp.pt"))

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    http_port = free_port()
    url = f"http://127.0.0.1:{http_port}"
    env = dict(os.environ, TPCFLOW_API_TOKEN="soak")
    broker = tpcflow("broker", "--bind", endpoint, "--heartbeat-interval", "0.5")
    workers = [tpcflow("worker", "--broker", endpoint, "--service", "soak", "--module", str(work / "net.py"),
                       "--heartbeat-interval", "0.5") for _ in range(args.workers)]
    http = tpcflow("serve-http", "--models", str(work / "models"), "--host", "127.0.0.1", "--port", str(http_port),
                   env=env)
    procs = [broker, *workers, http]
    stop = threading.Event()
    try:
        import httpx

        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("serve-http did not start")
            time.sleep(0.2)
        with TFaaSClient(url, token="soak") as c:
            c.upload("mlp", {"name": "mlp", "keys": ["px", "py"]}, work / "mlp.pt")
        t0 = time.monotonic()
        stats = Stats(t0)
        threads = [threading.Thread(target=mdp_client, args=(endpoint, events, stats, stop, i * 10**9), daemon=True)
                   for i in range(args.clients)]
        threads += [threading.Thread(target=http_valid, args=(url, stats, stop), daemon=True),
                    threading.Thread(target=http_hostile, args=(url, stats, stop), daemon=True)]
        for t in threads:
            t.start()
        memory = defaultdict(dict)  # minute -> {process: MB}
        kills, next_kill, rng = 0, t0 + args.kill_every, np.random.default_rng(0)
        while time.monotonic() - t0 < minutes * 60:
            time.sleep(1.0)
            now = time.monotonic()
            minute = int((now - t0) // 60)
            memory[minute] = {"broker": rss_mb(broker.pid), "serve-http": rss_mb(http.pid)}
            if now >= next_kill:
                i = int(rng.integers(len(workers)))
                workers[i].send_signal(signal.SIGKILL)
                workers[i].wait()
                workers[i] = tpcflow("worker", "--broker", endpoint, "--service", "soak", "--module",
                                     str(work / "net.py"), "--heartbeat-interval", "0.5")
                procs.append(workers[i])
                kills += 1
                next_kill = now + args.kill_every
        stop.set()
        for t in threads:
            t.join(60)
    finally:
        stop.set()
        for p in procs:
            p.kill()
            p.wait()

    def p99(xs):
        return float(np.percentile(xs, 99)) * 1e3 if xs else float("nan")

    # the last full minute (what follows is the drain after the stop)
    last = max(0, min(max(memory), int(np.ceil(minutes)) - 1))
    print(f"{'minute':>6} {'mdp':>7} {'mdp p99 ms':>10} {'http':>7} {'http p99 ms':>11} {'broker MB':>9} {'http MB':>8}")
    for m in range(last + 1):
        mdp, ht = stats.lat["mdp"].get(m, []), stats.lat["http"].get(m, [])
        mem = memory.get(m, {})
        print(f"{m:>6} {len(mdp):>7} {p99(mdp):>10.1f} {len(ht):>7} {p99(ht):>11.1f} "
              f"{mem.get('broker', float('nan')):>9.1f} {mem.get('serve-http', float('nan')):>8.1f}")
    duplicated = sum(1 for n in stats.seen.values() if n > 1)
    hostile = {k: v for k, v in stats.count.items() if k.startswith("hostile")}
    lost_kinds = {k: v for k, v in stats.count.items() if k.startswith("mdp_lost: ")}
    print(f"workers killed: {kills}; MDP sent {stats.count['mdp_sent']}, answered {len(stats.seen)}, "
          f"given up after retries {stats.count['mdp_lost']} {lost_kinds}, in flight at the stop "
          f"{stats.count['mdp_in_flight_at_stop']}, duplicated {duplicated}, "
          f"wrong {stats.count['mdp_wrong']}; HTTP valid {stats.count['http']}, failed {stats.count['http_failed']}; "
          f"hostile answers {hostile}")
    first_lat, last_lat = p99(stats.lat["mdp"].get(0, [])), p99(stats.lat["mdp"].get(last, []))
    first_http, last_http = p99(stats.lat["http"].get(0, [])), p99(stats.lat["http"].get(last, []))
    print(f"BENCH soak_mdp_lost {stats.count['mdp_lost']} requests baseline=0 ratio=nan")
    print(f"BENCH soak_mdp_duplicated {duplicated} requests baseline=0 ratio=nan")
    print(f"BENCH soak_mdp_p99_last_minute {last_lat:.1f} ms baseline={first_lat:.1f} ratio={first_lat / last_lat:.2f}")
    print(f"BENCH soak_http_p99_last_minute {last_http:.1f} ms baseline={first_http:.1f} "
          f"ratio={first_http / last_http:.2f}")
    for name in ("broker", "serve-http"):
        a, b = memory[0].get(name, float("nan")), memory[last].get(name, float("nan"))
        print(f"BENCH soak_{name}_rss_last_minute {b:.1f} MB baseline={a:.1f} ratio={a / b:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
