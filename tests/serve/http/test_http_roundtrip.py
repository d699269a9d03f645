"""Upload -> list -> predict -> delete round trips against a real uvicorn server."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
import torch
from http_testutil import FEATURES, TOKEN, make_image_model, make_mlp, mlp_params, running_server
from PIL import Image

from tpcflow.errors import ServiceError
from tpcflow.serve.http.batching import DynamicBatcher
from tpcflow.serve.http.cache import ModelCache
from tpcflow.serve.http.client import HTTPServiceError, TFaaSClient
from tpcflow.serve.http.repository import ModelRepository
from tpcflow.serve.http.settings import Settings


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    settings = Settings(models_dir=root, api_token=TOKEN, max_batch_size=32, max_batch_delay_ms=2.0)
    with running_server(settings) as (url, app):
        yield url, app


@pytest.fixture(scope="module")
def mlp_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("mlp") / "mlp.pt"
    model = make_mlp(path)
    labels = path.parent / "labels.txt"
    labels.write_text("background\ncosmic\nneutrino\n")
    return path, labels, model


def test_upload_list_predict_delete(server, mlp_file):
    url, _ = server
    path, labels, model = mlp_file
    with TFaaSClient(url, token=TOKEN) as client:
        up = client.upload("mlp-rt", mlp_params("mlp-rt"), path, labels)
        assert up["version"] == 1 and up["format"] == "torchscript"
        listed = {m["name"]: m for m in client.models()}
        assert listed["mlp-rt"]["versions"] == [1]
        assert listed["mlp-rt"]["output_names"] == ["logits"]

        x = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
        expect = model(torch.from_numpy(x)).detach().numpy()
        # one row
        one = client.predict({"model": "mlp-rt", "keys": FEATURES, "values": x[0].tolist()})
        np.testing.assert_allclose(one["predictions"], expect[0], rtol=1e-5, atol=1e-6)
        # a batch, keys in another order: the server reorders the columns
        perm = [2, 0, 3, 1]
        batch = client.predict({"model": "mlp-rt", "keys": [FEATURES[i] for i in perm], "values": x[:, perm].tolist()})
        np.testing.assert_allclose(batch["predictions"], expect, rtol=1e-5, atol=1e-6)

        # a second upload is version 2 and becomes the default
        path2 = path.parent / "mlp2.pt"
        model2 = make_mlp(path2, seed=7)
        assert client.upload("mlp-rt", mlp_params("mlp-rt"), path2)["version"] == 2
        latest = client.predict({"model": "mlp-rt", "values": x.tolist()})
        np.testing.assert_allclose(latest["predictions"], model2(torch.from_numpy(x)).detach().numpy(), rtol=1e-5,
                                   atol=1e-6)
        v1 = client.predict({"model": "mlp-rt", "values": x.tolist(), "version": 1})
        np.testing.assert_allclose(v1["predictions"], expect, rtol=1e-5, atol=1e-6)

        assert client.delete("mlp-rt", version=1)["deleted_versions"] == [1]
        assert client.delete("mlp-rt")["deleted_versions"] == [2]
        assert "mlp-rt" not in {m["name"] for m in client.models()}
        with pytest.raises(HTTPServiceError) as err:
            client.predict({"model": "mlp-rt", "values": x.tolist()})
        assert err.value.status == 404 and "unknown model" in err.value.message


def test_image_classification(server, tmp_path):
    url, _ = server
    model = make_image_model(tmp_path / "img.pt")
    labels = tmp_path / "labels.txt"
    labels.write_text("track\nshower\nnoise\n")
    params = {"name": "img", "img_channels": 3, "img_width": 12, "img_height": 8}
    rgb = np.random.default_rng(0).integers(0, 256, size=(8, 12, 3), dtype=np.uint8)
    png = tmp_path / "event.png"
    Image.fromarray(rgb).save(png)
    with TFaaSClient(url, token=TOKEN) as client:
        client.upload("img", params, tmp_path / "img.pt", labels)
        out = client.image(png, "img")
    x = torch.from_numpy(rgb.astype(np.float32).transpose(2, 0, 1)[None] / 255.0)
    probs = torch.softmax(model(x), dim=1)[0].detach().numpy()
    got = {r["label"]: r["probability"] for r in out["labels"]}
    assert [r["label"] for r in out["labels"]] == [["track", "shower", "noise"][i] for i in np.argsort(-probs)]
    np.testing.assert_allclose([got[k] for k in ["track", "shower", "noise"]], probs, rtol=1e-5)
    assert out["filename"] == "event.png"


def test_concurrent_requests_are_batched_and_correct(server, mlp_file):
    url, app = server
    path, labels, model = mlp_file
    with TFaaSClient(url, token=TOKEN) as client:
        client.upload("mlp-batch", mlp_params("mlp-batch"), path, labels)
    rng = np.random.default_rng(11)
    xs = rng.normal(size=(64, 4)).astype(np.float32)

    async def fire():
        async with httpx.AsyncClient(base_url=url, timeout=30) as ac:
            rs = await asyncio.gather(*[ac.post("/json", json={"model": "mlp-batch", "values": x.tolist()})
                                        for x in xs])
        return [r.json()["predictions"] for r in rs]

    preds = np.array(asyncio.run(fire()))
    np.testing.assert_allclose(preds, model(torch.from_numpy(xs)).detach().numpy(), rtol=1e-5, atol=1e-6)
    stats = {m["name"]: m for m in app.state.tpcflow.cache.info()}["mlp-batch"]
    assert stats["requests"] == 64 and stats["rows"] == 64
    assert stats["batches"] < 64  # some requests shared a model call


def test_status_metrics_docs(server):
    url, _ = server
    with httpx.Client(base_url=url) as http:
        status = http.get("/status").json()
        assert status["status"] == "ok" and status["uploads_enabled"] is True
        http.get("/models")
        metrics = http.get("/metrics")
        assert metrics.status_code == 200
        assert 'tpcflow_http_requests_total{method="GET",route="/models",status="200"}' in metrics.text
        assert http.get("/docs").status_code == 200
        assert "/v2/models/{name}/infer" in http.get("/openapi.json").json()["paths"]


def test_batcher_isolates_a_failing_request():
    def fn(inputs):
        (x,) = inputs
        if np.any(x < 0):
            raise ValueError("negative input")
        return [x * 2]

    async def main():
        batcher = DynamicBatcher(fn, max_batch=8, max_wait=0.005, name="t")
        try:
            good = [np.full((1, 2), i, np.float32) for i in range(5)]
            bad = np.full((1, 2), -1, np.float32)
            results = await asyncio.gather(*[batcher.submit([g]) for g in good], batcher.submit([bad]),
                                           return_exceptions=True)
        finally:
            batcher.close()
        return results, batcher.stats

    results, stats = asyncio.run(main())
    for i, r in enumerate(results[:5]):
        np.testing.assert_array_equal(r[0], np.full((1, 2), 2 * i, np.float32))
    assert isinstance(results[5], ValueError)
    assert stats.errors == 1


def test_checkpoint_upload(server, tmp_path):
    from tpcflow.models import registry
    from tpcflow.models.checkpoint import save_checkpoint

    url, _ = server
    config = registry.NetworkConfig(**{**_small_network_kwargs(registry)})
    net = registry.build_network(config).eval()
    ckpt = tmp_path / "net.ckpt"
    save_checkpoint(ckpt, net, config)
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expect = net(torch.from_numpy(x)).numpy()  # one logits tensor [B, C, P, H, W]
    params = {"name": "uresnet-small", "input_shape": [3, 64, 64], "output_names": ["logits"]}
    with TFaaSClient(url, token=TOKEN) as client:
        up = client.upload("uresnet-small", params, ckpt)
        assert up["format"] == "checkpoint"
        out = client.predict({"model": "uresnet-small", "values": x.reshape(2, -1).tolist()})
    assert "outputs" not in out  # one output: its values are the predictions
    got = np.asarray(out["predictions"])
    assert got.shape == (2, 3, 3, 64, 64)
    np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-5)


def _small_network_kwargs(registry) -> dict:
    import dataclasses

    names = {f.name for f in dataclasses.fields(registry.NetworkConfig)}
    small = {"n_initial_filters": 2, "network_depth": 2, "depth": 2, "filters": 2, "blocks_per_layer": 1,
             "blocks_deepest_layer": 1, "blocks_final": 1}
    return {k: v for k, v in small.items() if k in names}


def test_batcher_waits_max_delay_and_drains_on_close():
    calls = []

    def fn(inputs):
        calls.append(inputs[0].shape[0])
        return [inputs[0] + 1]

    async def main():
        batcher = DynamicBatcher(fn, max_batch=8, max_wait=0.2, name="delay")
        first = asyncio.ensure_future(batcher.submit([np.zeros((1, 3), np.float32)]))
        await asyncio.sleep(0.02)  # well inside the delay: joins the same call
        second = asyncio.ensure_future(batcher.submit([np.ones((2, 3), np.float32)]))
        await asyncio.sleep(0)
        batcher.close()  # queued requests still complete
        out = await asyncio.gather(first, second)
        with pytest.raises(ServiceError, match="being unloaded"):
            await batcher.submit([np.zeros((1, 3), np.float32)])
        return out

    first, second = asyncio.run(main())
    assert calls == [3]
    np.testing.assert_array_equal(first[0], np.ones((1, 3)))
    np.testing.assert_array_equal(second[0], np.full((2, 3), 2.0))


def test_cache_evicts_least_recently_used(tmp_path):
    repo = ModelRepository(tmp_path / "repo")
    refs = {}
    for i, name in enumerate(["a", "b"]):
        refs[name] = make_mlp(tmp_path / f"{name}.pt", seed=i)
        repo.add(name, {"name": name}, tmp_path / f"{name}.pt")
    cache = ModelCache(repo, capacity=1)
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)

    async def run(name):
        return (await cache.aget(name)).batcher, (await (await cache.aget(name)).batcher.submit([x]))[0]

    try:
        batcher_a, out_a = asyncio.run(run("a"))
        assert len(cache) == 1 and cache.peek("a") is not None
        _, out_b = asyncio.run(run("b"))  # a new event loop: "b" has its own batcher
        assert len(cache) == 1 and cache.peek("a") is None and cache.peek("b") is not None
        assert batcher_a._closed
        for name, out in (("a", out_a), ("b", out_b)):
            np.testing.assert_allclose(out, refs[name](torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
    finally:
        cache.close()


def test_onnx_upload_and_predict(server, tmp_path):
    pytest.importorskip("onnxruntime", reason="optional extra 'onnx' not installed")
    pytest.importorskip("onnx", reason="torch.onnx.export needs the onnx package")
    url, _ = server
    model = make_mlp(tmp_path / "unused.pt", seed=4)
    x = torch.randn(3, 4)
    torch.onnx.export(model, (x,), str(tmp_path / "mlp.onnx"), input_names=["input0"], output_names=["output0"],
                      dynamic_axes={"input0": {0: "b"}, "output0": {0: "b"}}, dynamo=False)
    with TFaaSClient(url, token=TOKEN) as client:
        assert client.upload("onnx-mlp", {"name": "onnx-mlp"}, tmp_path / "mlp.onnx")["format"] == "onnx"
        out = client.predict({"model": "onnx-mlp", "values": x.tolist()})
    np.testing.assert_allclose(out["predictions"], model(x).detach().numpy(), rtol=1e-5, atol=1e-6)
