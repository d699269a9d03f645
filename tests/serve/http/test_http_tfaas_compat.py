"""Issue 13: TFaaS clients work unchanged: its client's command lines, requests without a model,
the protobuf routes, /params, /predict/*, and gzip-bundle and base64 uploads."""

from __future__ import annotations

import base64
import io
import json
import re
import shlex
import tarfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from http_testutil import TOKEN, make_image_model, make_mlp, running_server
from PIL import Image

from tpcflow.cli.main import main
from tpcflow.serve.http import tfaas_pb2
from tpcflow.serve.http.settings import Settings

AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: the TFaaS client's command lines, verbatim from its README (seed 001)
SEED_LINES = """
tfaas_client.py --url=$url --upload=upload.json
tfaas_client.py --url=$url --models
tfaas_client.py --url=$url --predict=input.json
tfaas_client.py --url=$url --image=/path/file.png --model=ImageModel
tfaas_client.py --url=$url --delete=model_name
""".strip().splitlines()


def _seed_args(line: str, url: str, folder: Path) -> list[str]:
    """A seed line as tpcflow runs it: ``tfaas_client.py`` is ``tpcflow client``; /path is the test's folder."""
    line = line.replace("$url", url).replace("/path/", f"{folder}/")
    args = shlex.split(line)
    assert args[0] == "tfaas_client.py"
    return ["client", *args[1:]]


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("TPCFLOW_API_TOKEN", TOKEN)
    settings = Settings(models_dir=tmp_path / "repo", api_token=TOKEN, max_upload_bytes=32 << 20)
    with running_server(settings) as (url, _app):
        yield url


def _mlp_on(model: torch.nn.Module, x: list[float]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([x], dtype=torch.float32)).numpy()[0]


def test_the_tfaas_client_command_lines_run_unchanged(server, tmp_path, capsys, monkeypatch):
    folder = tmp_path
    monkeypatch.chdir(folder)  # upload.json and input.json are named relative to the working folder
    reference = make_mlp(folder / "model_0228.pb", n_in=2)  # TorchScript under TFaaS's file name
    (folder / "labels.txt").write_text("a\nb\nc\n")
    (folder / "params.json").write_text(json.dumps({
        "name": "model_name", "model": "model_0228.pb", "labels": "labels.txt", "inputNode": "dense_4_input",
        "outputNode": "output_node0", "keys": ["attribute1", "attribute2"]}))
    (folder / "upload.json").write_text(json.dumps({  # fully qualified paths, as the README asks
        "model": f"{folder}/model_0228.pb", "labels": f"{folder}/labels.txt", "name": "model_name",
        "params": f"{folder}/params.json"}))
    # the README's input.json leaves `values` unquoted, which no JSON parser (TFaaS's client included) reads
    (folder / "input.json").write_text('{"keys":["attribute1", "attribute2"], "values": [1.0, -2.0]}')
    Image.new("RGB", (8, 8), (200, 10, 10)).save(folder / "file.png")
    outputs = []
    for line in SEED_LINES:
        if "--image" in line:  # the image model the line refers to
            make_image_model(folder / "image.pt")
            with httpx.Client(base_url=server, headers=AUTH) as http:
                r = http.post("/upload", data={"name": "ImageModel"}, files={
                    "params": ("params.json", json.dumps({"name": "ImageModel"})),
                    "model": ("image.pt", (folder / "image.pt").read_bytes())})
                assert r.status_code == 201, r.text
        assert main(_seed_args(line, server, folder)) == 0, line
        outputs.append(json.loads(capsys.readouterr().out))
    uploaded, models, predicted, image, deleted = outputs
    assert uploaded["name"] == "model_name" and [m["name"] for m in models] == ["model_name"]
    # no "model" in input.json: the server's only model answered (it had one when asked)
    np.testing.assert_allclose(predicted["predictions"], _mlp_on(reference, [1.0, -2.0]), rtol=1e-5)
    assert image["model"] == "ImageModel" and len(image["labels"]) == 3
    assert deleted["deleted_versions"] == [1]


def test_requests_without_a_model_use_the_default_model(server, tmp_path):
    first = make_mlp(tmp_path / "a.pt", n_in=2, seed=1)
    second = make_mlp(tmp_path / "b.pt", n_in=2, seed=2)
    row = {"keys": ["u", "v"], "values": [0.5, 0.25]}
    with httpx.Client(base_url=server, headers=AUTH) as http:
        for name, path in (("first", "a.pt"), ("second", "b.pt")):
            r = http.post("/upload", data={"name": name}, files={
                "params": ("params.json", json.dumps({"name": name, "keys": ["u", "v"]})),
                "model": (path, (tmp_path / path).read_bytes())})
            assert r.status_code == 201, r.text
        r = http.post("/json", json=row)
        assert r.status_code == 400 and "names no model and the server has 2 models" in r.json()["detail"]
        assert http.post("/params", json={"name": "nope"}).status_code == 404
        assert http.post("/params", json={"name": "second"}).json() == {"default_model": "second"}
        np.testing.assert_allclose(http.post("/json", json=row).json()["predictions"],
                                   _mlp_on(second, [0.5, 0.25]), rtol=1e-5)
        np.testing.assert_allclose(http.post("/predict/json", json={**row, "model": "first"}).json()["predictions"],
                                   _mlp_on(first, [0.5, 0.25]), rtol=1e-5)
        assert http.get("/params").json()["name"] == "second"
        assert http.get("/params", params={"model": "first"}).json()["keys"] == ["u", "v"]
        assert httpx.post(f"{server}/params", json={"name": "first"}).status_code == 401  # needs the token


def test_protobuf_rows_get_protobuf_predictions(server, tmp_path):
    reference = make_mlp(tmp_path / "m.pt", n_in=2)
    with httpx.Client(base_url=server, headers=AUTH) as http:
        r = http.post("/upload", data={"name": "m"}, files={
            "params": ("params.json", json.dumps({"name": "m", "keys": ["u", "v"], "labels": ["x", "y", "z"]})),
            "model": ("m.pt", (tmp_path / "m.pt").read_bytes())})
        assert r.status_code == 201, r.text
        for route in ("/proto", "/predict/proto"):
            row = tfaas_pb2.Row(key=["v", "u"], value=[-2.0, 1.0], model="m")  # the keys put the values in order
            r = http.post(route, content=row.SerializeToString(), headers={"content-type": "application/x-protobuf"})
            assert r.status_code == 200 and r.headers["content-type"] == "application/x-protobuf", r.text
            answer = tfaas_pb2.Predictions.FromString(r.content)
            assert [c.label for c in answer.prediction] == ["x", "y", "z"]
            np.testing.assert_allclose([c.probability for c in answer.prediction], _mlp_on(reference, [1.0, -2.0]),
                                       rtol=1e-5)
        r = http.post("/proto", content=b"\xff\xff\xff not protobuf")
        assert r.status_code == 400 and "tfaaspb.Row" in r.json()["detail"]


def _bundle(files: dict[str, bytes], *, gzip: bool = True, extra=None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gzip else "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if extra is not None:
            extra(tar)
    return buf.getvalue()


def test_gzip_bundles_and_base64_models_upload(server, tmp_path):
    make_mlp(tmp_path / "m.pt", n_in=2)
    model = (tmp_path / "m.pt").read_bytes()
    params = json.dumps({"name": "mnist", "model": "model.pt", "labels": "labels.txt"}).encode()
    bundle = _bundle({"mnist/params.json": params, "mnist/model.pt": model, "mnist/labels.txt": b"0\n1\n2\n"})
    with httpx.Client(base_url=server, headers=AUTH) as http:
        r = http.post("/upload", content=bundle, headers={"content-encoding": "gzip",
                                                          "content-type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        assert r.json()["name"] == "mnist" and r.json()["format"] == "torchscript"
        r = http.post("/upload", data={"name": "b64"}, headers={"content-encoding": "base64"}, files={
            "params": ("params.json", json.dumps({"name": "b64"})),
            "model": ("m.pt", base64.b64encode(model))})
        assert r.status_code == 201 and r.json()["format"] == "torchscript", r.text
        expected = http.post("/json", json={"model": "mnist", "values": [1.0, 2.0]}).json()["predictions"]
        assert http.post("/json", json={"model": "b64", "values": [1.0, 2.0]}).json()["predictions"] == expected
        # hostile bundles: a path out of the folder, a link, a bomb, not a tar at all
        for bad, status, words in (
            (_bundle({"../evil/params.json": params}), 400, "unsafe path"),
            (_bundle({"x/params.json": params}, extra=lambda t: t.addfile(_link())), 400, "not a regular file"),
            (_bundle({"x/params.json": params, "x/model.pt": b"\0" * (64 << 20)}), 413, "decompressed"),
            (b"just some bytes", 400, "neither a multipart form nor a (gzip) tar"),
        ):
            r = http.post("/upload", content=bad, headers={"content-type": "application/octet-stream"})
            assert r.status_code == status and words in r.json()["detail"], r.text


def _link() -> tarfile.TarInfo:
    info = tarfile.TarInfo("x/model.pt")
    info.type = tarfile.SYMTYPE
    info.linkname = "/etc/passwd"
    return info


def test_the_proto_file_and_the_generated_module_agree():
    """tfaas_pb2.py is generated from tfaas.proto: every message and field of one is in the other."""
    import tpcflow.serve.http as http_pkg

    text = (Path(http_pkg.__file__).parent / "tfaas.proto").read_text()
    declared = {}
    for name, body in re.findall(r"message (\w+) \{(.*?)\}", text, flags=re.S):
        declared[name] = {(f, int(n)) for f, n in re.findall(r"(\w+) = (\d+);", body)}
    generated = {m.name: {(f.name, f.number) for f in m.fields} for m in tfaas_pb2.DESCRIPTOR.message_types_by_name.values()}
    assert declared == generated
