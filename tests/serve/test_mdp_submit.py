"""tpcflow submit end to end: exact predictions, entry order, event ids, resume; model workers."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from mdp_helpers import HB, free_port, running  # noqa: E402

from tpcflow.cli.main import main  # noqa: E402
from tpcflow.errors import ConfigError, ServiceError  # noqa: E402
from tpcflow.io import EventID, open_larcv3, write_larcv3  # noqa: E402
from tpcflow.serve import codec  # noqa: E402
from tpcflow.serve.mdp import Broker, Worker  # noqa: E402
from tpcflow.serve.mdp.cosmic import CosmicTaggerHandler, encode_request  # noqa: E402
from tpcflow.serve.mdp.service import load_service  # noqa: E402
from tpcflow.serve.mdp.submit import submit_files  # noqa: E402

KEY = "sparse2d/sbndwire"


def threshold(images):
    return (images > 100).astype(np.int64)  # a "network": label 1 where the charge exceeds 100 ADC


@pytest.fixture
def real_input(tmp_path, shared_data):
    """The 5 real CosmicTagger events, with distinct event ids (the original file stores -1)."""
    r = open_larcv3(shared_data("larcv3/cosmic_tagging_light.h5"), products=[KEY])
    events = r.read_range(0, len(r))
    for i, ev in enumerate(events):
        ev.event_id = EventID(7, 1, 100 + i)
    path = tmp_path / "in.h5"
    write_larcv3(path, events)
    return path, events


def _check_output(out: Path, events, producer="cosmicseg_pred"):
    r = open_larcv3(out)
    assert len(r) == len(events)
    np.testing.assert_array_equal(r.event_ids, [ev.event_id.as_tuple() for ev in events])
    for entry, ev in enumerate(events):
        got = r.read(entry)
        for p_in, p_lab, p_sc in zip(ev.products[KEY], got.products[f"sparse2d/{producer}"],
                                     got.products[f"sparse2d/{producer}_score"]):
            np.testing.assert_array_equal(p_lab.index, p_in.index)
            np.testing.assert_array_equal(p_lab.values, (p_in.values > 100).astype(np.float32))
            np.testing.assert_array_equal(p_sc.values, np.ones(len(p_in), np.float32))
            assert p_lab.meta == p_in.meta


def _stack(ctx, handler, service="seg"):
    # generous liveness: broker, worker and a numpy-heavy handler share one process and 2 busy cores
    broker = Broker("tcp://127.0.0.1:0", heartbeat_interval=HB, heartbeat_liveness=30, context=ctx)
    worker = Worker(broker.endpoint, service, handler, max_batch=2, max_wait=0.01, slots=4, heartbeat_interval=HB,
                    heartbeat_liveness=30, context=ctx)
    return broker, worker


def test_submit_cli_writes_exact_predictions_in_entry_order(ctx, real_input, tmp_path):
    path, events = real_input
    broker, worker = _stack(ctx, CosmicTaggerHandler(threshold))
    out = tmp_path / "out.h5"
    with running(broker, worker):
        rc = main(["submit", "--broker", broker.endpoint, "--service", "seg", str(path), "-o", str(out),
                   "--no-progress", "--max-in-flight", "4"])
        assert rc == 0
        assert main(["submit", "--broker", broker.endpoint, "--service", "seg", str(path), "-o", str(out),
                     "--no-progress"]) == 1  # refuses to overwrite
    _check_output(out, events)
    assert not out.with_name("out.h5.partial").exists()
    assert worker.served == 5


class Flaky:
    """Fails every request whose event number is in ``bad`` (an interruption mid-run)."""

    def __init__(self, inner, bad):
        self.inner, self.bad = inner, set(bad)

    def __call__(self, bodies):
        out = self.inner(bodies)
        for i, body in enumerate(bodies):
            if codec.decode(body)[0].event_id[2] in self.bad:
                out[i] = RuntimeError("GPU fell over")
        return out


def test_submit_resumes_after_interruption_without_loss_or_duplicates(ctx, real_input, tmp_path):
    path, events = real_input
    out = tmp_path / "out.h5"
    broker, flaky = _stack(ctx, Flaky(CosmicTaggerHandler(threshold), bad={103}))
    with running(broker, flaky):
        with pytest.raises(ServiceError, match="GPU fell over"):
            submit_files(broker.endpoint, "seg", [path], out, max_in_flight=1, flush_every=1, progress=False,
                         context=ctx)
    assert not out.exists()
    chunks = list(out.with_name("out.h5.partial").glob("chunk-*.npz"))
    assert len(chunks) == 3  # entries 0, 1, 2 finished before 103 failed
    broker, good = _stack(ctx, CosmicTaggerHandler(threshold))
    with running(broker, good):
        res = submit_files(broker.endpoint, "seg", [path], out, max_in_flight=3, progress=False, context=ctx)
    assert (res.entries, res.skipped, res.sent) == (5, 3, 2)
    _check_output(out, events)
    assert not out.with_name("out.h5.partial").exists()


def test_resume_refuses_other_inputs(ctx, real_input, tmp_path, shared_data):
    path, _ = real_input
    out = tmp_path / "o.h5"
    side = out.with_name("o.h5.partial")
    side.mkdir()
    (side / "manifest.json").write_text('{"inputs": ["elsewhere.h5"]}')
    with pytest.raises(ConfigError, match="different submission"):
        submit_files("tcp://127.0.0.1:1", "seg", [path], out, progress=False, context=ctx)


def test_a_second_submit_to_the_same_output_is_refused_while_the_first_runs(ctx, real_input, tmp_path, shared_data):
    """The first holds the resume folder's lock (here: this test, as another open of the lock file)."""
    import fcntl
    import os

    path, _ = real_input
    out = tmp_path / "o.h5"
    side = out.with_name("o.h5.partial")
    side.mkdir()
    fd = os.open(side / "lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="another tpcflow submit is writing .*o.h5"):
            submit_files("tcp://127.0.0.1:1", "seg", [path], out, progress=False, context=ctx, wait_service=0.1)
        assert side.is_dir()  # the first one's folder is left alone
    finally:
        os.close(fd)
    # once the first is gone the lock is free: the second gets past it (and then finds no broker)
    with pytest.raises(ServiceError):
        submit_files("tcp://127.0.0.1:1", "seg", [path], out, progress=False, context=ctx, wait_service=0.1)


def test_checkpoint_and_torchscript_workers_match_direct_inference(tmp_path):
    torch = pytest.importorskip("torch")
    from tpcflow.models.checkpoint import save_checkpoint
    from tpcflow.models.registry import NetworkConfig, build_network
    from tpcflow.sim.sbnd import generate_event

    cfg = NetworkConfig(n_initial_filters=2, network_depth=2, blocks_per_layer=1, blocks_deepest_layer=1,
                        blocks_final=1, bottleneck_deepest=4)
    torch.manual_seed(0)
    model = build_network(cfg).eval()
    ckpt = save_checkpoint(tmp_path / "tiny.ckpt", model, cfg)
    events = [generate_event(np.random.default_rng(s), downsample=4) for s in range(1)]
    bodies = [[bytes(f) for f in encode_request(ev.event_id, ev.products[KEY])] for ev in events]
    h, w = events[0].products[KEY][0].meta.number_of_voxels[::-1]
    traced = tmp_path / "tiny.torchscript"
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates jit.trace; users still have files
        torch.jit.save(torch.jit.trace(model, torch.zeros(1, 3, h, w), check_trace=False), str(traced))
    for path, precision in ((ckpt, None), (traced, None), (ckpt, "bf16")):
        predict, spec = load_service(model_path=path, device="cpu", precision=precision)
        replies = CosmicTaggerHandler(predict, spec)(bodies)
        for ev, reply in zip(events, replies):
            planes = ev.products[KEY]
            ts = codec.decode_all(reply)
            image = np.stack([p.to_dense().T for p in planes])[None]  # CosmicTagger layout [1, 3, H, W]
            with torch.inference_mode():
                logits = model(torch.from_numpy(image))[0]  # [C, P, H, W]
            for k, p in enumerate(planes):
                w, h = np.unravel_index(p.index.astype(np.int64), p.meta.number_of_voxels)
                expect = logits[:, k, h, w].argmax(0).numpy()
                lab, score = ts[2 * k].data, ts[2 * k + 1].data
                agree = (lab == expect).mean() if len(expect) else 1.0
                assert agree == 1.0 if precision is None else agree > 0.9
                assert np.all((score > 0.33) & (score <= 1.0))


def test_malformed_cosmic_request_gets_a_clear_error_reply(ctx):
    broker, worker = _stack(ctx, CosmicTaggerHandler(threshold))
    with running(broker, worker):
        from tpcflow.serve.mdp import Client

        with Client(broker.endpoint, timeout=5, context=ctx) as c:
            c.wait_for_service("seg", 5)
            with pytest.raises(ServiceError, match=r"\(500\).*ProtocolError: tensor codec"):
                c.request("seg", [b"TPCT{broken", b"\0"])
            one_plane = codec.encode_coo(np.array([1], np.uint32), np.array([2.0], np.float32), (4, 4))
            bad_shape = one_plane + codec.encode_coo(np.array([1], np.uint32), np.array([2.0], np.float32), (8, 4))
            with pytest.raises(ServiceError, match="plane 1 has shape"):
                c.request("seg", bad_shape)


def test_submit_through_majortomos_broker_without_mmi(ctx, real_input, tmp_path):
    """majortomo's broker has no MMI: with --wait-service 0 submit does not ask, and works through it."""
    import logging
    import threading

    mbroker = pytest.importorskip("majortomo.broker")
    logging.getLogger("majortomo").setLevel(logging.ERROR)
    path, events = real_input
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    mb = mbroker.Broker(bind=endpoint, heartbeat_interval=HB, heartbeat_timeout=HB * 30, zmq_context=ctx)
    thread = threading.Thread(target=mb.run, daemon=True)
    thread.start()
    worker = Worker(endpoint, "seg", CosmicTaggerHandler(threshold), max_batch=2, slots=4, heartbeat_interval=HB,
                    heartbeat_liveness=30, context=ctx)
    out = tmp_path / "out.h5"
    try:
        with running(worker):
            rc = main(["submit", "--broker", endpoint, "--service", "seg", str(path), "-o", str(out),
                       "--no-progress", "--wait-service", "0", "--timeout", "20"])
    finally:
        mb.stop()
        thread.join(5)
    assert rc == 0
    _check_output(out, events)


@pytest.mark.parametrize("downsample", [4, 0])
def test_a_sparse_checkpoint_serves_voxels_without_a_dense_image(tmp_path, monkeypatch, downsample):
    """Issue 14: a worker hosting the sparse network sends the COO voxels straight into forward_sparse
    (one call per batch) and answers the labels of the dense path, on the real cosmic_tagging_light.h5."""
    torch = pytest.importorskip("torch")
    from conftest import data_path

    from tpcflow.io import open_larcv3
    from tpcflow.io.products import image_coordinates
    from tpcflow.models.checkpoint import data_section, save_checkpoint
    from tpcflow.models.registry import NetworkConfig, build_network
    from tpcflow.serve.mdp import cosmic

    cfg = NetworkConfig(n_initial_filters=2, network_depth=2, blocks_per_layer=1, blocks_deepest_layer=1,
                        blocks_final=1, bottleneck_deepest=4, conv_mode="sparse")
    torch.manual_seed(0)
    model = build_network(cfg).eval()
    ckpt = save_checkpoint(tmp_path / "sparse.ckpt", model, cfg,
                           extra={"data": data_section(downsample, (1280 >> downsample, 2048 >> downsample))})
    with open_larcv3(data_path("larcv3/cosmic_tagging_light.h5")) as r:
        events = [r.read(e) for e in range(3)]
    bodies = [[bytes(f) for f in encode_request(ev.event_id, ev.products["sparse2d/sbndwire"])] for ev in events]
    predict, spec = load_service(model_path=ckpt, device="cpu")
    assert predict.sparse
    calls = []
    real = predict.runner.forward_sparse
    monkeypatch.setattr(predict.runner, "forward_sparse", lambda *a: calls.append(a[1]) or real(*a))
    monkeypatch.setattr(cosmic, "_scatter", lambda *a: pytest.fail("the sparse worker made a dense image"))
    sparse = CosmicTaggerHandler(predict, spec)(bodies)
    assert calls == [3]  # one forward_sparse for the batch of three events
    monkeypatch.undo()
    monkeypatch.setattr(type(predict), "sparse", property(lambda self: False))  # today's dense detour
    dense = CosmicTaggerHandler(predict, spec)(bodies)
    images = cosmic._scatter([cosmic.decode_request(b)[1] for b in bodies], (2048, 1280))
    with torch.inference_mode():
        top2 = predict(images).topk(2, dim=1).values  # the dense logits [B, 2, P, H, W]
    gap = (top2[:, 0] - top2[:, 1]).numpy()
    for e, (a, b) in enumerate(zip(sparse, dense, strict=True)):
        ta, tb = codec.decode_all(a), codec.decode_all(b)
        for k, proj in enumerate(events[e].products["sparse2d/sbndwire"]):
            la, lb = ta[2 * k].data, tb[2 * k].data
            np.testing.assert_allclose(ta[2 * k + 1].data, tb[2 * k + 1].data, rtol=1e-5)  # the scores
            # labels equal, but where the untrained network's two best logits tie to 1e-4 (last-bit order effects)
            h, w = image_coordinates(proj.index, proj.meta.number_of_voxels)
            assert len(la) > 1000 and np.all((la == lb) | (gap[e, k, h, w] < 1e-4))
