"""Issue 17: tpcflow export --triton writes a Triton model repository (config.pbtxt checked with Triton's own
schema); tpcflow serve-http serves that folder; tpcflow submit --kserve equals submit through the broker."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "http"))
from http_testutil import running_server  # noqa: E402
from mdp_helpers import HB, running  # noqa: E402

from tpcflow.cli.main import main  # noqa: E402
from tpcflow.errors import ConfigError, DataFormatError  # noqa: E402
from tpcflow.io import EventID, open_larcv3, write_larcv3  # noqa: E402
from tpcflow.serve.http.settings import Settings  # noqa: E402
from tpcflow.serve.mdp import Broker, Worker  # noqa: E402
from tpcflow.serve.mdp.cosmic import CosmicTaggerHandler  # noqa: E402
from tpcflow.serve.mdp.service import load_service  # noqa: E402
from tpcflow.serve.mdp.submit import submit_files  # noqa: E402
from tpcflow.serve.triton import parse_model_config  # noqa: E402

torch = pytest.importorskip("torch")
KEY = "sparse2d/sbndwire"
TINY = dict(n_initial_filters=2, network_depth=2, blocks_per_layer=1, blocks_deepest_layer=1, blocks_final=1,
            bottleneck_deepest=4)


def _checkpoint(path, conv_mode="2D"):
    from tpcflow.models.checkpoint import data_section, save_checkpoint
    from tpcflow.models.registry import NetworkConfig, build_network

    cfg = NetworkConfig(**TINY, conv_mode=conv_mode)
    torch.manual_seed(0)
    return save_checkpoint(path, build_network(cfg).eval(), cfg, extra={"data": data_section(4, (80, 128))})


@pytest.fixture
def events_file(tmp_path, shared_data):
    with open_larcv3(shared_data("larcv3/cosmic_tagging_light.h5"), products=[KEY]) as r:
        events = r.read_range(0, 3)
    for i, ev in enumerate(events):
        ev.event_id = EventID(5, 1, i)
    return write_larcv3(tmp_path / "in.h5", events)


def test_the_exported_repository_holds_a_valid_triton_config_and_the_traced_network(tmp_path):
    ckpt = _checkpoint(tmp_path / "dense.ckpt")
    assert main(["export", str(ckpt), "--triton", str(tmp_path / "repo"), "--max-batch", "4"]) == 0
    folder = tmp_path / "repo" / "cosmic_tagger"
    config = parse_model_config((folder / "config.pbtxt").read_text(), folder / "config.pbtxt")
    assert config.name == "cosmic_tagger" and config.platform == "pytorch_libtorch" and config.max_batch_size == 4
    assert [i.name for i in config.input] == ["INPUT__0"] and list(config.input[0].dims) == [3, 80, 128]
    assert list(config.output[0].dims) == [3, 3, 80, 128] and config.HasField("dynamic_batching")
    assert json.loads(config.parameters["tpcflow_data"].string_value)["downsample"] == 4
    params = json.loads((folder / "1" / "params.json").read_text())
    assert params["input_shape"] == [3, 80, 128] and params["format"] == "torchscript"
    traced = torch.jit.load(str(folder / "1" / "model.pt"))
    from tpcflow.models.checkpoint import load_model

    model, _ = load_model(ckpt)
    x = torch.rand(2, 3, 80, 128)
    torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)
    assert main(["export", str(ckpt), "--triton", str(tmp_path / "repo")]) == 1  # version 1 exists: refused
    assert main(["export", str(ckpt), "--triton", str(tmp_path / "repo"), "--version", "2"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["1", "2", "config.pbtxt"]
    assert not [p for p in (tmp_path / "repo").iterdir() if p.name.startswith(".")]  # nothing left behind


def test_a_bad_config_and_a_sparse_network_are_refused(tmp_path):
    with pytest.raises(DataFormatError, match="not a Triton model configuration"):
        parse_model_config('name: "x"\nmax_batch: 3\n')
    with pytest.raises(ConfigError, match="sparse network"):
        from tpcflow.workflows.triton_export import export_triton

        export_triton(_checkpoint(tmp_path / "sparse.ckpt", "sparse"), tmp_path / "repo")


def test_submit_kserve_to_serve_http_equals_submit_through_the_broker(ctx, tmp_path, events_file):
    ckpt = _checkpoint(tmp_path / "dense.ckpt")
    predict, spec = load_service(model_path=str(ckpt), device="cpu")
    broker = Broker("tcp://127.0.0.1:0", heartbeat_interval=HB, heartbeat_liveness=30, context=ctx)
    worker = Worker(broker.endpoint, "cosmic_tagger", CosmicTaggerHandler(predict, spec), max_batch=1,
                    heartbeat_interval=HB, heartbeat_liveness=30, context=ctx)
    with running(broker, worker):
        submit_files(broker.endpoint, "cosmic_tagger", [events_file], tmp_path / "broker.h5", progress=False,
                     context=ctx)
    from tpcflow.workflows.triton_export import export_triton

    export_triton(ckpt, tmp_path / "repo")
    with running_server(Settings(models_dir=tmp_path / "repo")) as (url, _app):
        rc = main(["submit", "--kserve", url, "--service", "cosmic_tagger", str(events_file), "-o",
                   str(tmp_path / "kserve.h5"), "--no-progress"])
        assert rc == 0
        assert main(["submit", "--kserve", url, "--service", "nope", str(events_file), "-o",
                     str(tmp_path / "nope.h5"), "--no-progress", "--wait-service", "1"]) == 1
    with open_larcv3(tmp_path / "broker.h5") as a, open_larcv3(tmp_path / "kserve.h5") as b:
        np.testing.assert_array_equal(a.event_ids, b.event_ids)
        assert len(a) == 3
        for e in range(3):
            ea, eb = a.read(e), b.read(e)
            assert ea.products.keys() == eb.products.keys()
            for key in ea.products:
                for pa, pb in zip(ea.products[key], eb.products[key], strict=True):
                    np.testing.assert_array_equal(pa.index, pb.index)
                    np.testing.assert_array_equal(pa.values, pb.values)  # every voxel
