"""Issue 15: the operating point (tpcflow.train.calibrate, ``tpcflow calibrate``): the background offset chosen on
validation events, written into the classifier's bias, so that inference and the services run the calibrated
network with nothing else to apply."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import TINY_NETWORK, data_path

from tpcflow.cli.main import main
from tpcflow.config import DataConfig, load_config
from tpcflow.errors import ConfigError
from tpcflow.io import Event, open_larcv3, write_larcv3
from tpcflow.models.checkpoint import read_checkpoint, restore_model
from tpcflow.sim.sbnd import generate_file
from tpcflow.train.calibrate import (
    DEFAULT_OFFSETS,
    apply_background_offset,
    calibrate,
    choose_offset,
    classifier_bias,
    sweep_background_offset,
)
from tpcflow.train.data import FileSource
from tpcflow.train.inference import infer
from tpcflow.train.loop import train
from tpcflow.train.network import TrainNetwork, evaluate, takes_voxels
from tpcflow.train.resolve import resolve_network

HEADLINE = ("Average/Non_Bkg_Accuracy", "Average/Cosmic_IoU", "Average/Neutrino_IoU")


def quiet(*_a, **_k):
    pass


def _train(out, conv_mode):
    cfg = load_config(["data.synthetic=true", "data.downsample=4", "data.synthetic_events=4", "run.minibatch_size=2",
                       "run.iterations=3", "run.aux_iterations=0", "run.progress=false", "run.num_threads=1",
                       f"run.output_dir={out}", "run.id=train", f"network.conv_mode={conv_mode}", *TINY_NETWORK])
    return train(cfg, echo=quiet).checkpoint


@pytest.fixture(scope="module")
def validation(tmp_path_factory):
    """4 labelled synthetic events at 80x128, another seed than the training events."""
    path = tmp_path_factory.mktemp("validation") / "validation.h5"
    generate_file(path, 4, 99, downsample=4, workers=1)
    return path


@pytest.fixture(scope="module", params=["2D", "sparse"])
def trained(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"calibrate-{request.param}")
    return out, _train(out, request.param), request.param


def _runner(ckpt, conv_mode, file, *, voxels):
    """The checkpoint's network and a source of ``file`` (voxel minibatches when ``voxels`` and the network is sparse)."""
    cfg = load_config(["run.num_threads=1", "data.downsample=0", f"network.conv_mode={conv_mode}", *TINY_NETWORK])
    netcfg = resolve_network(cfg)
    source = FileSource([file], DataConfig(file=str(file), downsample=0, num_threads=1), 2, cycle=False,
                        shuffle=False, sparse=voxels and takes_voxels(cfg, netcfg))
    runner = TrainNetwork(cfg, netcfg, torch.device("cpu"), source.shape)
    restore_model(runner.model, netcfg, read_checkpoint(ckpt))
    return runner, source


def _evaluate(ckpt, conv_mode, file, offset=0.0):
    """Metrics as training validates (the sparse network on its voxels), after ``apply_background_offset``."""
    runner, source = _runner(ckpt, conv_mode, file, voxels=True)
    try:
        apply_background_offset(runner.model, offset)
        return evaluate(runner, source)
    finally:
        source.close()


def test_the_sweep_measures_what_the_offset_in_the_bias_gives(trained, validation):
    """Shifting the logits in the sweep and moving the classifier's bias are the same network, dense and sparse
    (the sparse one evaluated on its voxels, the sweep on its dense output)."""
    _out, ckpt, conv_mode = trained
    runner, source = _runner(ckpt, conv_mode, validation, voxels=False)
    try:
        sweep = {r["offset"]: r for r in sweep_background_offset(runner, source, offsets=(-0.5, 0.0, 0.5, 1.5))}
    finally:
        source.close()
    for offset, row in sweep.items():
        measured = _evaluate(ckpt, conv_mode, validation, offset)
        for name in HEADLINE:
            # one pixel whose two logits tie within float rounding may flip: 1e-3 is under one pixel of an event
            assert measured[name] == pytest.approx(row[name], abs=1e-3), (offset, name)
    # lowering the background logit never loses a labelled pixel that was right
    nb = [sweep[o]["Average/Non_Bkg_Accuracy"] for o in sorted(sweep)]
    assert all(b >= a for a, b in zip(nb, nb[1:])) and nb[-1] > nb[0]


def test_choose_offset_meets_the_bar_with_the_most_margin():
    targets = {"Average/Non_Bkg_Accuracy": 0.95, "Average/Cosmic_IoU": 0.90}

    def row(offset, nb, cos):
        return {"offset": offset, "Average/Non_Bkg_Accuracy": nb, "Average/Cosmic_IoU": cos}

    rows = [row(-0.5, 0.90, 0.95), row(0.0, 0.94, 0.93), row(0.5, 0.96, 0.92), row(1.0, 0.97, 0.80)]
    assert choose_offset(rows, targets)["offset"] == 0.5  # worst ratios 0.947, 0.989, 1.011, 0.889
    assert choose_offset([row(0.5, 0.96, 0.92), row(-0.5, 0.96, 0.92), row(0.0, 0.96, 0.92)], targets)["offset"] == 0.0
    assert choose_offset([row(0.0, math.nan, 0.99), row(0.5, 0.5, 0.5)], targets)["offset"] == 0.5  # NaN never wins
    with pytest.raises(ValueError, match="no offsets"):
        choose_offset([], targets)


def test_a_network_without_a_classifier_bias_is_refused():
    from tpcflow.models.registry import build_network

    model = build_network(resolve_network(load_config([*TINY_NETWORK, "network.bias=false"])))
    with pytest.raises(ValueError, match="network.bias=true"):
        classifier_bias(model)
    with pytest.raises(ValueError, match="not finite"):
        apply_background_offset(build_network(resolve_network(load_config(list(TINY_NETWORK)))), math.nan)


def test_calibrate_then_infer_and_serve_the_real_file(tmp_path, validation, capsys):
    """The whole path: train, ``tpcflow calibrate`` on validation events, then ``tpcflow inference`` and the
    MDP service run the calibrated checkpoint on the real SBND file and agree; inference on the validation
    events measures what calibrate chose."""
    from tpcflow.serve.mdp.inprocess import segment_via_broker

    ckpt = _train(tmp_path, "2D")
    base = ["--config", str(tmp_path / "train" / "config.yaml"), "data.synthetic=false", "run.id=cal",
            "run.minibatch_size=2"]
    assert main(["calibrate", *base, f"data.file={validation}", "data.downsample=0",
                 f"mode.weights_location={ckpt}"]) == 0
    printed = capsys.readouterr().out
    assert "calibrated checkpoint:" in printed and "CosmicTagger target" in printed
    run_dir = tmp_path / "cal"
    calibrated = run_dir / "calibrated.pt"
    sweep = np.genfromtxt(run_dir / "calibration.csv", delimiter=",", names=True)
    assert len(sweep) == len(DEFAULT_OFFSETS)
    assert (run_dir / "calibration.png").read_bytes()[:4] == b"\x89PNG"

    before, after = read_checkpoint(ckpt), read_checkpoint(calibrated)
    offset = after["calibration"]["background_offset"]
    assert offset in DEFAULT_OFFSETS and after["data"] == before["data"]
    for key, value in before["model"].items():
        if key == "classifier.bias":
            expected = value.clone()
            expected[0] -= offset
            torch.testing.assert_close(after["model"][key], expected)
        else:
            assert torch.equal(after["model"][key], value), key

    # inference on the validation events measures the row that calibrate chose
    cfg = load_config([*base[2:], f"data.file={validation}", "data.downsample=0",
                       f"mode.weights_location={calibrated}", "run.id=check"], base=base[1], mode="inference")
    chosen = sweep[np.isclose(sweep["offset"], offset)][0]
    res = infer(cfg, echo=quiet)
    for name in ("Average/Cosmic_IoU", "Average/Neutrino_IoU"):  # defined for every image: the same mean
        assert res.metrics[name] == pytest.approx(float(chosen[name.replace("/", "")]), abs=1e-3), name

    # the real file through inference and through the service: the same labels
    real = data_path("larcv3/cosmic_tagging_light.h5")
    cfg = load_config([*base[2:], f"data.file={real}", "data.downsample=4", f"mode.weights_location={calibrated}",
                       "run.id=real", "mode.event_displays=0"], base=base[1], mode="inference")
    res = infer(cfg, echo=quiet)
    served = tmp_path / "served.h5"
    segment_via_broker(calibrated, [real], served, device="cpu", progress=False)
    with open_larcv3(res.output_file) as a, open_larcv3(served) as b:
        assert len(a) == len(b) == 5
        for e in range(5):
            for pa, pb in zip(a.read(e).products["sparse2d/cosmicseg_pred"],
                              b.read(e).products["sparse2d/cosmicseg_pred"], strict=True):
                np.testing.assert_array_equal(pa.values, pb.values)

    # calibrating the calibrated network adds to its offset
    cfg = load_config([*base[2:], f"data.file={validation}", "data.downsample=0", f"mode.weights_location={calibrated}",
                       f"mode.output_file={tmp_path / 'again.pt'}"], base=base[1], mode="inference")
    again = calibrate(cfg, echo=quiet)
    assert again.total_offset == pytest.approx(offset + again.offset)
    assert read_checkpoint(again.checkpoint)["calibration"]["background_offset"] == pytest.approx(again.total_offset)


def test_events_without_labels_are_refused_with_the_product(tmp_path, validation):
    from tpcflow.io.products import SparseProjection

    ckpt = _train(tmp_path, "2D")
    unlabeled, background = tmp_path / "unlabeled.h5", tmp_path / "background.h5"
    with open_larcv3(validation) as r:
        events = [r.read(e) for e in range(len(r))]
    write_larcv3(unlabeled, [Event(ev.event_id, {"sparse2d/sbndwire": ev.products["sparse2d/sbndwire"]})
                             for ev in events])
    write_larcv3(background, [Event(ev.event_id, {**ev.products, "sparse2d/sbnd_cosmicseg": [
        SparseProjection(p.meta, p.index, np.zeros_like(p.values)) for p in ev.products["sparse2d/sbnd_cosmicseg"]]})
        for ev in events])
    for file, message in ((unlabeled, "sbnd_cosmicseg"), (background, "no labelled")):
        cfg = load_config([f"data.file={file}", "data.downsample=0", f"mode.weights_location={ckpt}",
                           f"run.output_dir={tmp_path}", "run.progress=false", *TINY_NETWORK], mode="inference")
        with pytest.raises(ConfigError, match=message):
            calibrate(cfg, echo=quiet)
        assert not (tmp_path / "test" / "calibrated.pt").exists()
