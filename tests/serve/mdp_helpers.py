"""Shared helpers for the MDP tests (imported as a plain module from tests/serve)."""

from __future__ import annotations

import contextlib
import socket

import numpy as np
import zmq

from tpcflow.io import ImageMeta, SparseProjection
from tpcflow.serve.mdp import Broker, Client, Worker
from tpcflow.serve.mdp.batching import per_request

HB = 0.1  # heartbeat interval used in tests [s]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def echo(body):
    return [bytes(f) for f in body]


@contextlib.contextmanager
def running(*things):
    """Start brokers / workers (objects with start/stop) and always stop them, last first."""
    started = []
    try:
        for t in things:
            t.start()
            started.append(t)
        yield things
    finally:
        for t in reversed(started):
            t.stop()


def make_stack(ctx: zmq.Context, *, n_workers=1, service="echo", handler=None, **broker_kw):
    # liveness 1 s: these tests are not about expiry, and CI machines stall threads for a while
    broker = Broker("tcp://127.0.0.1:0", heartbeat_interval=HB, heartbeat_liveness=10, context=ctx, **broker_kw)
    workers = [Worker(broker.endpoint, service, handler or per_request(echo), heartbeat_interval=HB,
                      heartbeat_liveness=10, context=ctx) for _ in range(n_workers)]
    return broker, workers


def client(endpoint: str, ctx: zmq.Context, **kw) -> Client:
    kw.setdefault("timeout", 5.0)
    return Client(endpoint, context=ctx, **kw)


def small_event(seed: int) -> list:
    """Three 32x16 planes of 40 random voxels each (cosmic-tagger request payload)."""
    rng = np.random.default_rng(seed)
    meta = ImageMeta(0, (32, 16), (32.0, 16.0), (0.0, 0.0))
    planes = []
    for _ in range(3):
        index = np.sort(rng.choice(32 * 16, 40, replace=False)).astype(np.uint64)
        planes.append(SparseProjection(meta, index, rng.random(40).astype(np.float32)))
    return planes
