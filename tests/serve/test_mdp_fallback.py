"""Issue 17: tpcflow submit --fallback local runs the same checkpoint in-process when the broker goes away."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from mdp_helpers import HB, free_port, running  # noqa: E402

from tpcflow.cli.main import main  # noqa: E402
from tpcflow.errors import ServiceUnavailableError  # noqa: E402
from tpcflow.io import EventID, open_larcv3, write_larcv3  # noqa: E402
from tpcflow.serve.mdp import Broker, Worker  # noqa: E402
from tpcflow.serve.mdp.cosmic import CosmicTaggerHandler  # noqa: E402
from tpcflow.serve.mdp.fallback import LocalFallback  # noqa: E402
from tpcflow.serve.mdp.service import load_service  # noqa: E402
from tpcflow.serve.mdp.submit import submit_files  # noqa: E402

KEY = "sparse2d/sbndwire"


@pytest.fixture
def setup(tmp_path, shared_data):
    """The 5 real events (distinct event ids) and a tiny sparse checkpoint trained at downsample 4."""
    torch = pytest.importorskip("torch")
    from tpcflow.models.checkpoint import data_section, save_checkpoint
    from tpcflow.models.registry import NetworkConfig, build_network

    with open_larcv3(shared_data("larcv3/cosmic_tagging_light.h5"), products=[KEY]) as r:
        events = r.read_range(0, len(r))
    for i, ev in enumerate(events):
        ev.event_id = EventID(3, 2, 10 + i)
    path = write_larcv3(tmp_path / "in.h5", events)
    cfg = NetworkConfig(n_initial_filters=2, network_depth=2, blocks_per_layer=1, blocks_deepest_layer=1,
                        blocks_final=1, bottleneck_deepest=4, conv_mode="sparse")
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "sparse.ckpt", build_network(cfg).eval(), cfg,
                           extra={"data": data_section(4, (80, 128))})
    return path, ckpt, events


def _stack(ctx, ckpt, *, kill_after=None):
    """A broker and a worker serving ``ckpt``; with ``kill_after`` the broker is stopped when the worker
    gets request number ``kill_after + 1`` (the requests before it are answered)."""
    predict, spec = load_service(model_path=str(ckpt), device="cpu")
    handler = CosmicTaggerHandler(predict, spec)
    broker = Broker("tcp://127.0.0.1:0", heartbeat_interval=HB, heartbeat_liveness=30, context=ctx)
    seen = []

    def serve(bodies):
        seen.extend(bodies)
        if kill_after is not None and len(seen) > kill_after:
            broker.stop()  # the broker goes away mid-run: this reply is never delivered
        return handler(bodies)

    worker = Worker(broker.endpoint, "cosmic_tagger", serve, max_batch=1, max_wait=0.0, slots=1,
                    heartbeat_interval=HB, heartbeat_liveness=30, context=ctx)
    return broker, worker, seen


def _read(path):
    with open_larcv3(path) as r:
        return r.event_ids.copy(), [r.read(e) for e in range(len(r))]


def test_the_broker_killed_mid_run_falls_back_locally_with_every_event_once_and_equal_outputs(ctx, setup, tmp_path):
    path, ckpt, events = setup
    broker, worker, _ = _stack(ctx, ckpt)
    with running(broker, worker):
        submit_files(broker.endpoint, "cosmic_tagger", [path], tmp_path / "served.h5", progress=False, context=ctx)

    broker, worker, seen = _stack(ctx, ckpt, kill_after=2)
    with running(broker, worker), pytest.warns(RuntimeWarning, match="FALLING BACK"):
        res = submit_files(broker.endpoint, "cosmic_tagger", [path], tmp_path / "mixed.h5", progress=False,
                           context=ctx, timeout=1.0, retries=0, max_in_flight=2,
                           fallback=LocalFallback(model_path=str(ckpt), device="cpu"))
    assert res.sent == 2 and res.local == 3 and len(seen) == 3  # two served, three run here, one of them resent
    served_ids, served = _read(tmp_path / "served.h5")
    mixed_ids, mixed = _read(tmp_path / "mixed.h5")
    np.testing.assert_array_equal(mixed_ids, [ev.event_id.as_tuple() for ev in events])  # each event once, in order
    np.testing.assert_array_equal(mixed_ids, served_ids)
    for a, b in zip(mixed, served, strict=True):
        assert a.products.keys() == b.products.keys()
        for key in a.products:
            for pa, pb in zip(a.products[key], b.products[key], strict=True):
                np.testing.assert_array_equal(pa.index, pb.index)
                np.testing.assert_array_equal(pa.values, pb.values)  # bit for bit


def test_no_broker_at_all_runs_locally_and_without_fallback_fails_clearly(setup, tmp_path):
    path, ckpt, events = setup
    endpoint = f"tcp://127.0.0.1:{free_port()}"  # nothing listens here
    with pytest.raises(ServiceUnavailableError, match="no reply|no worker"):
        submit_files(endpoint, "cosmic_tagger", [path], tmp_path / "none.h5", progress=False, timeout=0.5,
                     retries=0, wait_service=1.0)
    assert not (tmp_path / "none.h5").exists() and not (tmp_path / "none.h5.partial").exists()
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        rc = main(["submit", "--broker", endpoint, str(path), "-o", str(tmp_path / "local.h5"), "--no-progress",
                   "--timeout", "0.5", "--retries", "0", "--wait-service", "1", "--fallback", "local",
                   "--model", str(ckpt), "--device", "cpu"])
    assert rc == 0
    assert any("FALLING BACK" in str(w.message) and "5 events left" in str(w.message) for w in said)
    ids, _ = _read(tmp_path / "local.h5")
    np.testing.assert_array_equal(ids, [ev.event_id.as_tuple() for ev in events])


def test_fallback_needs_the_model(setup, tmp_path):
    path, _ckpt, _ = setup
    assert main(["submit", str(path), "-o", str(tmp_path / "x.h5"), "--fallback", "local"]) != 0
