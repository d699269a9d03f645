"""Issue 13: an image model published by root-train answers /image and KServe with its training preprocessing.

The model is trained on log1p(x) / scale; /image fed it pixels / 255 and every grayscale image got a
400 (no img_channels).  Now the upload carries both, and the server applies the transform.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import torch
from conftest import png_image_folder
from http_testutil import TOKEN, running_server

from tpcflow.cli.main import main
from tpcflow.serve.http.client import TFaaSClient
from tpcflow.serve.http.settings import Settings
from tpcflow.workflows.image_classify import load_image_folder, preprocess


def test_a_published_image_model_answers_with_its_training_preprocessing(tmp_path, capsys, monkeypatch):
    png_image_folder(tmp_path, 4)
    folder = tmp_path / "hep_images" / "train"
    (tmp_path / "p.json").write_text('{"epochs": 1, "widths": [4], "input_pool": 1}')
    monkeypatch.setenv("TPCFLOW_API_TOKEN", TOKEN)
    with running_server(Settings(models_dir=tmp_path / "repo", api_token=TOKEN)) as (url, _app):
        assert main(["root-train", "--images", str(tmp_path / "hep_images"), "--labels", str(tmp_path / "labels.csv"),
                     "--params", str(tmp_path / "p.json"), "--out", str(tmp_path / "out"), "--upload", url,
                     "--name", "img", "--no-progress"]) == 0
        x, _, names = load_image_folder(tmp_path / "hep_images", tmp_path / "labels.csv")
        scale = json.loads((tmp_path / "out" / "params.json").read_text())["scale"]
        net = torch.jit.load(str(tmp_path / "out" / "model.pt"))
        with torch.no_grad():
            logits = net(torch.from_numpy(preprocess(x, scale)[0])).numpy()
        expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        with httpx.Client(base_url=url) as http:
            r = http.post("/image", data={"model": "img"}, files={"image": ("ev1.png", (folder / "ev1.png").read_bytes())})
        assert r.status_code == 200, r.text
        got = {d["label"]: d["probability"] for d in r.json()["labels"]}
        np.testing.assert_allclose([got[n] for n in names], expected[1], rtol=1e-4)
        with TFaaSClient(url) as c:  # raw images (pixels / 255) to KServe: the same probabilities
            np.testing.assert_allclose(c.infer("img", x)[0], expected, rtol=1e-4)
    capsys.readouterr()
