"""Issue 13: a root-train model answers raw events correctly wherever it is applied.

Train on a real file, upload the output folder by hand (its upload.json), then send raw rows
(physics units, null where a jagged slot is empty) to /json, /predict/json, KServe v2 and
root-predict (local and through the server): every path gives the probabilities of the trained
network applied to the rows the training generator makes.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import uproot
from conftest import data_path
from http_testutil import TOKEN, running_server

from tpcflow.cli.main import main
from tpcflow.io.root import DataReader
from tpcflow.loader.root_generator import DataGenerator
from tpcflow.loader.root_preprocess import Preprocessing, output_transform
from tpcflow.serve.http.client import HTTPServiceError, TFaaSClient
from tpcflow.serve.http.settings import Settings
from tpcflow.workflows.root_predict import predict_root
from tpcflow.workflows.root_train import RootTrainParams, train_root

HZZ = "root/uproot-HZZ.root"
INCLUDE = ["Jet_P*", "Jet_E", "Electron_P*", "MET_*", "NJet", "NMuon"]
MODEL = """
from torch import nn
def model(idim):
    return nn.Sequential(nn.Linear(idim, 16), nn.ReLU(), nn.Linear(16, 5))
"""
N = 40  # events sent to the server


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 5-class model of NMuon on the real HZZ ntuple (jagged jets and electrons capped at 3)."""
    tmp = tmp_path_factory.mktemp("hzz")
    (tmp / "m.py").write_text(MODEL)
    params = RootTrainParams(epochs=1, batch_size=128, chunk_size=1000, nevts=600, include=INCLUDE, jdim=3)
    summary = train_root([str(data_path(HZZ))], "NMuon", tmp / "m.py", params, tmp / "hzz-model",
                         progress=False, echo=lambda *_: None)
    return tmp / "hzz-model", summary


def _reference(out, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw rows of the first n events, and the probabilities of the network on the generator's rows."""
    serving = json.loads((out / "params.json").read_text())
    prep = Preprocessing.from_dict(serving["preprocessing"])
    with DataReader(data_path(HZZ)) as reader:
        raw = prep.raw_rows(reader.read(0, n, prep.branches))
    gen = DataGenerator([data_path(HZZ)], labels="NMuon", specs=out / "specs.json", include=INCLUDE, jdim=3,
                        nevts=n, shuffle=False, chunk_size=n)
    chunk = next(gen.iterate("all"))
    gen.close()
    net = torch.jit.load(str(out / "model.pt"))
    with torch.no_grad():
        logits = net(torch.from_numpy(chunk.x)).numpy()
    np.testing.assert_array_equal(prep.model_input(raw), chunk.x)  # one preprocessing, two callers
    return raw, output_transform(logits, "softmax")


def test_every_path_answers_raw_events_with_the_trained_probabilities(trained, tmp_path, capsys, monkeypatch):
    out, summary = trained
    assert summary["truncated"], "jdim=3 truncates some events of the HZZ jets"
    raw, expected = _reference(out, N)
    assert np.isnan(raw).any(), "some jagged slots are empty"
    keys = json.loads((out / "params.json").read_text())["keys"]
    rows = [[None if math.isnan(v) else float(v) for v in row] for row in raw.astype(np.float64)]
    settings = Settings(models_dir=tmp_path / "repo", api_token=TOKEN)
    with running_server(settings) as (url, _app):
        # the output folder uploaded as it is, by the client command
        monkeypatch.setenv("TPCFLOW_API_TOKEN", TOKEN)
        assert main(["client", "--url", url, "upload", str(out / "upload.json")]) == 0
        capsys.readouterr()
        with TFaaSClient(url, token=TOKEN) as c:
            answers = {
                "/json": c.predict({"model": "hzz-model", "keys": keys, "values": rows})["predictions"],
                "/predict/json": c._request("POST", "/predict/json", json={
                    "model": "hzz-model", "keys": keys[::-1], "values": [r[::-1] for r in rows]})["predictions"],
                "kserve": c.infer("hzz-model", raw)[0],
            }
            # pre-normalised rows stay possible, with the explicit flag
            pre = c.predict({"model": "hzz-model", "preprocessed": True,
                             "values": Preprocessing.from_dict(json.loads((out / "params.json").read_text())[
                                 "preprocessing"]).model_input(raw).tolist()})["predictions"]
            answers["preprocessed"] = pre
            # a raw value beyond float32 is refused, not turned into inf and read as an empty slot
            huge = [list(rows[0])]
            huge[0][0] = 1e39
            with pytest.raises(HTTPServiceError, match="beyond float32's range") as err:
                c.predict({"model": "hzz-model", "keys": keys, "values": huge})
            assert err.value.status == 400
        served = predict_root(f"{url}/hzz-model", [str(data_path(HZZ))], tmp_path / "served.root", progress=False,
                              echo=lambda *_: None)
    local = predict_root(out, [str(data_path(HZZ))], tmp_path / "local.root", progress=False, echo=lambda *_: None)
    for name, got in answers.items():
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6, err_msg=name)
    assert local["events"] == served["events"] == 2421
    for path in (tmp_path / "local.root", tmp_path / "served.root"):
        t = uproot.open(path)["scores"].arrays(library="np")
        scores = np.stack([t[f"score_{k}"] for k in range(5)], axis=1)
        np.testing.assert_allclose(scores[:N], expected, rtol=1e-5, atol=1e-6, err_msg=str(path))
        np.testing.assert_array_equal(t["entry"], np.arange(2421))
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)


def test_root_predict_command_writes_a_friend_tree_keyed_by_identifiers(tmp_path, capsys):
    """NanoAOD: run/luminosityBlock/event are keys of the output, never features of the model."""
    nano = str(data_path("root/nanoAOD_2015_CMS_Open_Data_ttbar.root"))
    (tmp_path / "m.py").write_text(MODEL.replace("16, 5", "16, 1"))
    (tmp_path / "files.txt").write_text(f"{nano} 1\n{nano} 0\n")
    (tmp_path / "p.json").write_text(json.dumps({"epochs": 1, "chunk_size": 400, "jdim": {"Jet_pt": 4}}))
    assert main(["root-train", "--files", str(tmp_path / "files.txt"), "--model", str(tmp_path / "m.py"),
                 "--params", str(tmp_path / "p.json"), "--include", "Jet_pt", "--include", "MET_pt",
                 "--include", "run", "--include", "event", "--include", "luminosityBlock",
                 "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    serving = json.loads((tmp_path / "out" / "params.json").read_text())
    assert serving["keys"] == ["MET_pt", "Jet_pt[0]", "Jet_pt[1]", "Jet_pt[2]", "Jet_pt[3]"]
    assert serving["output_transform"] == "sigmoid"
    assert serving["preprocessing"]["identifiers"] == ["run", "luminosityBlock", "event"]
    assert "events in nJet" in capsys.readouterr().out
    assert main(["root-predict", nano, "--model", str(tmp_path / "out"), "-o", str(tmp_path / "s.root"),
                 "--no-progress"]) == 0
    scores = uproot.open(tmp_path / "s.root")["scores"].arrays(library="np")
    events = uproot.open(nano)["Events"].arrays(["run", "luminosityBlock", "event"], library="np")
    for key in ("run", "luminosityBlock", "event"):
        np.testing.assert_array_equal(scores[key], events[key])
    assert ((scores["score"] > 0) & (scores["score"] < 1)).all()


def test_root_predict_reads_and_writes_parquet_like_root(trained, tmp_path):
    """The same model over a Parquet copy of the tree, written to .parquet: the scores of the ROOT run."""
    pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install 'tpcflow[parquet]')")
    import awkward as ak

    out, _ = trained
    prep = Preprocessing.from_dict(json.loads((out / "params.json").read_text())["preprocessing"])
    arrays = uproot.open(data_path(HZZ))["events"].arrays(prep.branches)
    ak.to_parquet(arrays, tmp_path / "hzz.parquet", row_group_size=1000)
    from_root = predict_root(out, [str(data_path(HZZ))], tmp_path / "a.root", progress=False, echo=lambda *_: None)
    from_parquet = predict_root(out, [str(tmp_path / "hzz.parquet")], tmp_path / "b.parquet", progress=False,
                                echo=lambda *_: None)
    assert from_root["events"] == from_parquet["events"] == 2421
    a = uproot.open(tmp_path / "a.root")["scores"].arrays(library="np")
    b = ak.from_parquet(tmp_path / "b.parquet")
    for k in range(5):
        np.testing.assert_array_equal(a[f"score_{k}"], ak.to_numpy(b[f"score_{k}"]))
