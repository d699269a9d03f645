"""``tpcflow client`` commands (upload, models, predict, image, delete) against a real server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import torch
from http_testutil import FEATURES, TOKEN, make_image_model, make_mlp, mlp_params, running_server
from PIL import Image

from tpcflow.cli.main import main
from tpcflow.serve.http.settings import Settings


@pytest.fixture
def server(tmp_path):
    with running_server(Settings(models_dir=tmp_path / "repo", api_token=TOKEN)) as (url, _app):
        yield url


def _run(capsys, *argv) -> tuple[int, object, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def test_client_commands(server, tmp_path, capsys, monkeypatch):
    url = server
    model = make_mlp(tmp_path / "mlp.pt", seed=2)
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    (tmp_path / "params.json").write_text(json.dumps(mlp_params("cli-mlp")))
    (tmp_path / "upload.json").write_text(json.dumps(
        {"model": "mlp.pt", "labels": "labels.txt", "name": "cli-mlp", "params": "params.json"}))
    x = [[0.1, -0.2, 0.3, 1.5], [1.0, 2.0, -1.0, 0.0]]
    (tmp_path / "input.json").write_text(json.dumps({"keys": FEATURES, "values": x, "model": "cli-mlp"}))

    monkeypatch.delenv("TPCFLOW_API_TOKEN", raising=False)
    code, _, err = _run(capsys, "client", "--url", url, "upload", str(tmp_path / "upload.json"))
    assert code == 1 and "HTTP 401" in err and "missing API token" in err

    monkeypatch.setenv("TPCFLOW_API_TOKEN", TOKEN)
    code, up, _ = _run(capsys, "client", "--url", url, "upload", str(tmp_path / "upload.json"))
    assert code == 0 and up["name"] == "cli-mlp" and up["version"] == 1

    code, models, _ = _run(capsys, "client", "--url", url, "models")
    assert [m["name"] for m in models] == ["cli-mlp"]

    code, pred, _ = _run(capsys, "client", "--url", url, "predict", str(tmp_path / "input.json"))
    expect = model(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(pred["predictions"], expect, rtol=1e-5, atol=1e-6)

    make_image_model(tmp_path / "img.pt", channels=1)
    (tmp_path / "img-upload.json").write_text(json.dumps(
        {"model": "img.pt", "labels": "labels.txt", "name": "img", "params": {"name": "img", "img_channels": 1}}))
    assert _run(capsys, "client", "--url", url, "upload", str(tmp_path / "img-upload.json"))[0] == 0
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(tmp_path / "grey.png")
    code, img, _ = _run(capsys, "client", "--url", url, "image", str(tmp_path / "grey.png"), "--model", "img")
    assert code == 0 and sorted(r["label"] for r in img["labels"]) == ["a", "b", "c"]
    assert abs(sum(r["probability"] for r in img["labels"]) - 1.0) < 1e-6

    code, deleted, _ = _run(capsys, "client", "--url", url, "delete", "cli-mlp")
    assert code == 0 and deleted["deleted_versions"] == [1]
    code, _, err = _run(capsys, "client", "--url", url, "delete", "cli-mlp")
    assert code == 1 and "HTTP 404" in err and "unknown model" in err


def test_client_reports_bad_files_and_unreachable_server(tmp_path, capsys):
    (tmp_path / "bad.json").write_text("{")
    code, _, err = _run(capsys, "client", "--url", "http://127.0.0.1:9", "predict", str(tmp_path / "bad.json"))
    assert code == 1 and "not valid JSON" in err
    (tmp_path / "ok.json").write_text('{"model": "m", "values": [1]}')
    code, _, err = _run(capsys, "client", "--url", "http://127.0.0.1:9", "--timeout", "2", "predict",
                        str(tmp_path / "ok.json"))
    assert code == 1 and "cannot reach the server" in err


def test_serve_http_command_runs_a_server(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, TPCFLOW_API_TOKEN=TOKEN)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tpcflow.cli.main", "serve-http", "--models", str(tmp_path / "models"),
         "--port", str(port), "--log-level", "warning", "--max-batch-size", "16"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/status", timeout=1).json()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert status is not None, proc.stdout.read().decode() if proc.poll() is not None else "server not up in 60 s"
        assert status["uploads_enabled"] is True and status["batching"]["max_batch_size"] == 16
        assert (tmp_path / "models").is_dir()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
