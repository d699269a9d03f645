"""KServe v2 protocol against a real uvicorn server, with tritonclient.http as the client."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import torch
from http_testutil import TOKEN, make_mlp, mlp_params, running_server

from tpcflow.serve.http.client import TFaaSClient
from tpcflow.serve.http.settings import Settings

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    path = root.parent / "kserve-mlp.pt"
    model = make_mlp(path, seed=5)
    with running_server(Settings(models_dir=root, api_token=TOKEN)) as (url, _app):
        with TFaaSClient(url, token=TOKEN) as c:
            c.upload("mlp", mlp_params("mlp"), path)
        triton = httpclient.InferenceServerClient(url=url.removeprefix("http://"), network_timeout=30.0)
        try:
            yield url, triton, model
        finally:
            triton.close()


def _reference(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_health_and_metadata(served):
    _url, triton, _ = served
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("mlp")
    assert not triton.is_model_ready("no-such-model")
    meta = triton.get_model_metadata("mlp")
    assert meta["inputs"] == [{"name": "input0", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"][0]["name"] == "logits" and meta["versions"] == ["1"]
    assert "binary_tensor_data" in triton.get_server_metadata()["extensions"]


@pytest.mark.parametrize("binary_in", [False, True])
@pytest.mark.parametrize("binary_out", [False, True])
def test_infer_json_and_binary(served, binary_in, binary_out):
    _url, triton, model = served
    x = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    inp = httpclient.InferInput("input0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary_in)
    out = httpclient.InferRequestedOutput("logits", binary_data=binary_out)
    result = triton.infer("mlp", [inp], outputs=[out], request_id="r-1")
    np.testing.assert_allclose(result.as_numpy("logits"), _reference(model, x), rtol=1e-5, atol=1e-6)
    assert result.get_response()["id"] == "r-1"


def test_infer_all_outputs_binary_by_default(served):
    _url, triton, model = served
    x = np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32)
    inp = httpclient.InferInput("input0", [3, 4], "FP32")
    inp.set_data_from_numpy(x)
    result = triton.infer("mlp", [inp])  # no outputs: binary_data_output for all
    np.testing.assert_allclose(result.as_numpy("logits"), _reference(model, x), rtol=1e-5, atol=1e-6)


def test_infer_errors_are_4xx_with_message(served):
    url, triton, _ = served
    x = np.zeros((2, 5), np.float32)
    inp = httpclient.InferInput("input0", [2, 5], "FP32")
    inp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as err:
        triton.infer("mlp", [inp])
    assert err.value.status() == "400" and "expected [4]" in err.value.message()
    wrong = httpclient.InferInput("features", [2, 4], "FP32")
    wrong.set_data_from_numpy(np.zeros((2, 4), np.float32))
    with pytest.raises(InferenceServerException) as err:
        triton.infer("mlp", [wrong])
    assert "takes inputs ['input0']" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        triton.infer("nope", [inp])
    assert err.value.status() == "404"
    with httpx.Client(base_url=url) as http:
        # binary size that does not match the shape
        header = json.dumps({"inputs": [{"name": "input0", "shape": [1, 4], "datatype": "FP32",
                                         "parameters": {"binary_data_size": 12}}]}).encode()
        r = http.post("/v2/models/mlp/infer", content=header + b"\0" * 12,
                      headers={"Inference-Header-Content-Length": str(len(header))})
        assert r.status_code == 400 and "binary_data_size 12" in r.json()["error"]
        r = http.post("/v2/models/mlp/infer", content=b"{not json")
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
        r = http.post("/v2/models/mlp/infer", json={"inputs": [{"name": "input0", "shape": [1, 4],
                                                               "datatype": "FP32", "data": [1, 2, 3]}]})
        assert r.status_code == 400 and "3 elements" in r.json()["error"]
        r = http.post("/v2/models/mlp/infer", json={"inputs": []})
        assert r.status_code == 422


def test_versioned_routes(served):
    _url, triton, model = served
    x = np.random.default_rng(4).normal(size=(2, 4)).astype(np.float32)
    inp = httpclient.InferInput("input0", [2, 4], "FP32")
    inp.set_data_from_numpy(x)
    result = triton.infer("mlp", [inp], model_version="1")
    np.testing.assert_allclose(result.as_numpy("logits"), _reference(model, x), rtol=1e-5, atol=1e-6)
    assert result.get_response()["model_version"] == "1"
    assert triton.is_model_ready("mlp", model_version="1")
    assert not triton.is_model_ready("mlp", model_version="2")
    assert triton.get_model_metadata("mlp", model_version="1")["name"] == "mlp"
    with pytest.raises(InferenceServerException) as err:
        triton.infer("mlp", [inp], model_version="7")
    assert err.value.status() == "404" and "no version 7" in err.value.message()


def test_answers_follow_the_declared_response_schemas(served):
    """Every documented route declares its response model; real answers validate against it."""
    from tpcflow.serve.http import schemas

    url, _triton, _ = served
    with httpx.Client(base_url=url, timeout=10) as c:
        spec = c.get("/openapi.json").json()
        checks = {
            ("get", "/v2/health/live"): schemas.LiveResponse,
            ("get", "/v2/health/ready"): schemas.ReadyResponse,
            ("get", "/v2"): schemas.ServerMetadataResponse,
            ("get", "/v2/models/mlp"): schemas.ModelMetadataResponse,
            ("get", "/v2/models/mlp/ready"): schemas.ModelReadyResponse,
            ("get", "/status"): schemas.StatusResponse,
        }
        for (method, path), model in checks.items():
            r = c.request(method.upper(), path)
            assert r.status_code == 200, (path, r.text)
            model.model_validate(r.json())
        body = {"inputs": [{"name": "input0", "shape": [2, 4], "datatype": "FP32", "data": [0.5] * 8}]}
        schemas.InferResponse.model_validate(c.post("/v2/models/mlp/infer", json=body).json())
        schemas.PredictResponse.model_validate(c.post("/json", json={"model": "mlp", "values": [[1, 2, 3, 4]]}).json())
    # the OpenAPI document carries the schemas (it had none while the routes wrote JSON by hand)
    for path, method in (("/v2/health/live", "get"), ("/v2/models/{name}/infer", "post"), ("/json", "post"),
                         ("/status", "get"), ("/upload", "post")):
        responses = spec["paths"][path][method]["responses"]
        ok = responses.get("200") or responses.get("201")
        assert "schema" in ok["content"]["application/json"], (path, ok)
    infer_body = spec["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]["application/json"]
    assert "$defs" not in json.dumps(infer_body)  # the pydantic model, inlined
    assert infer_body["schema"]["properties"]["inputs"]["items"]["properties"]["datatype"]["enum"][0] == "BOOL"
