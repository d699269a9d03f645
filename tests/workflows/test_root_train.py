"""root-train: the workflow on real ROOT files, its outputs, the CLI and the upload."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from conftest import data_path

from tpcflow.cli.main import main
from tpcflow.errors import ConfigError
from tpcflow.io.root import load_specs
from tpcflow.loader.root_generator import DataGenerator
from tpcflow.workflows.root_train import RootTrainParams, load_user_model, train_root

HZZ = "root/uproot-HZZ.root"
MODEL = """
from torch import nn
def model(idim):
    return nn.Sequential(nn.Linear(idim, 16), nn.ReLU(), nn.Linear(16, {k}))
"""


@pytest.fixture
def model_file(tmp_path):
    p = tmp_path / "my_model.py"
    p.write_text(MODEL.format(k=5))
    return p


def test_train_root_writes_model_specs_and_learns(tmp_path, model_file):
    params = RootTrainParams(epochs=3, batch_size=64, lr=3e-3, chunk_size=500, validation_split=0.2, nevts=1200,
                             include=["Jet_*", "Electron_*", "MET_*", "NJet", "NMuon", "Photon_*"])
    out = tmp_path / "out"
    summary = train_root([str(data_path(HZZ))], "NMuon", model_file, params, out, progress=False, echo=lambda *_: None)
    hist = summary["history"]
    assert len(hist) == 3 and hist[-1]["loss"] < hist[0]["loss"]
    assert summary["events"]["train"] + summary["events"]["validation"] == 1200
    specs = load_specs(out / "specs.json")
    assert "NMuon" not in specs.branches and specs.width == summary["idim"]
    assert (out / "labels.txt").read_text().split() == ["0", "1", "2", "3", "4"]
    # TorchScript and state dict give the same outputs on real rows
    g = DataGenerator([data_path(HZZ)], specs=out / "specs.json", labels="NMuon", include=params.include,
                      nevts=50, shuffle=False)
    x = torch.from_numpy(next(g.iterate("all")).x)
    scripted = torch.jit.load(str(out / "model.pt"))
    net = load_user_model(model_file, summary["idim"])
    net.load_state_dict(torch.load(out / "model_state.pt"))
    net.eval()
    torch.testing.assert_close(scripted(x), net(x))
    saved = json.loads((out / "train_params.json").read_text())
    assert saved["idim"] == summary["idim"] and len(saved["columns"]) == summary["idim"]
    serving = json.loads((out / "params.json").read_text())  # the artifact the server takes as it is
    assert serving["keys"] == saved["columns"] and serving["output_transform"] == "softmax"
    assert serving["preprocessing"]["specs"]["branches"].keys() == specs.branches.keys()


def test_params_and_model_errors(tmp_path):
    with pytest.raises(ConfigError, match="epoch"):
        RootTrainParams.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="does not exist"):
        load_user_model(tmp_path / "nope.py", 4)
    bad = tmp_path / "bad.py"
    bad.write_text("def modle(idim):\n    return None\n")
    with pytest.raises(ConfigError, match="must define a function model"):
        load_user_model(bad, 4)


def test_wrong_output_count_is_explained(tmp_path):
    p = tmp_path / "m.py"
    p.write_text(MODEL.format(k=1))
    params = RootTrainParams(epochs=1, nevts=200, include=["Jet_*", "NMuon"], validation_split=0.0)
    with pytest.raises(ConfigError, match="labels span"):
        train_root([str(data_path(HZZ))], "NMuon", p, params, tmp_path / "o", progress=False, echo=lambda *_: None)


class _UploadHandler(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.path, self.headers["Content-Type"], body))
        reply = json.dumps({"name": "hzz", "version": 1}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def test_cli_root_train_with_per_file_labels_and_upload(tmp_path, model_file, capsys):
    files = tmp_path / "files.txt"
    files.write_text(f"{data_path(HZZ)} 0\n{data_path('root/uproot-HZZ-zstd.root')} 1\n")
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"epochs": 1, "nevts": 200, "chunk_size": 400, "batch_size": 100}))
    model_file.write_text(MODEL.format(k=2))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _UploadHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _UploadHandler.received.clear()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        rc = main(["root-train", "--files", str(files), "--model", str(model_file), "--params", str(params),
                   "--include", "Muon_*", "--out", str(tmp_path / "out"), "--upload", url, "--name", "hzz",
                   "--no-progress"])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert rc == 0
    assert (tmp_path / "out" / "model.pt").is_file()
    assert "uploaded 'hzz'" in capsys.readouterr().out
    (path, ctype, body) = _UploadHandler.received[0]
    assert path == "/upload" and ctype.startswith("multipart/form-data")
    for field in (b'name="name"', b'name="params"', b'name="model"', b'name="labels"'):
        assert field in body
    assert b'"input_shape"' in body


def test_cli_bad_params_file_reports_error(tmp_path, model_file, capsys):
    files = tmp_path / "files.txt"
    files.write_text(f"{data_path(HZZ)} 1\n")
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"epochz": 1}))
    rc = main(["root-train", "--files", str(files), "--model", str(model_file), "--params", str(params)])
    assert rc == 1 and "epochz" in capsys.readouterr().err


KERAS_MODEL = '''
import keras

def model(idim):
    """MLaaS4HEP's ex_keras.py shape: a compiled Keras model of idim inputs."""
    m = keras.Sequential([keras.layers.Input((idim,)), keras.layers.Dense(16, activation="relu"),
                          keras.layers.Dense(5)])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return m
'''


def test_a_keras_model_trains_exports_and_scores_like_a_torch_one(tmp_path, monkeypatch):
    """Issue 13: Keras 3 user models train through root-train on Keras's torch backend (no TensorFlow)."""
    monkeypatch.setenv("KERAS_BACKEND", "torch")  # as load_user_model sets it, before keras is first imported
    pytest.importorskip("keras", reason="keras is not installed (pip install 'tpcflow[keras]')")
    from tpcflow.workflows.root_predict import predict_root

    (tmp_path / "ex_keras.py").write_text(KERAS_MODEL)
    params = RootTrainParams(epochs=2, batch_size=64, lr=3e-3, chunk_size=500, nevts=600,
                             include=["Jet_*", "Electron_*", "MET_*", "NMuon"])
    out = tmp_path / "out"
    summary = train_root([str(data_path(HZZ))], "NMuon", tmp_path / "ex_keras.py", params, out, progress=False,
                         echo=lambda *_: None)
    assert summary["history"][-1]["loss"] < summary["history"][0]["loss"]
    net = load_user_model(tmp_path / "ex_keras.py", summary["idim"])
    assert type(net).__module__.startswith("keras")
    scored = predict_root(out, [str(data_path(HZZ))], tmp_path / "s.root", progress=False, echo=lambda *_: None)
    assert scored["events"] == 2421 and "score_4" in scored["columns"]
