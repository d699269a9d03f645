"""`tpcflow train | iotest | inference` through the command line."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import TINY_NETWORK, data_path

from tpcflow.cli.main import main
from tpcflow.config import describe_options
from tpcflow.io import open_larcv3
from tpcflow.sim.sbnd import generate_file

TINY = [
    "run.minibatch_size=2",
    "run.progress=false",
    "run.num_threads=1",
    *TINY_NETWORK,
]


@pytest.mark.parametrize("command", ["train", "iotest", "inference"])
def test_help_lists_every_option_with_default(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for opt in describe_options():
        assert f"{opt.key}={opt.default!r}" in out, opt.key


def test_unknown_key_is_an_error_with_closest_match(capsys):
    assert main(["train", "mode.optimizer.learnig_rate=0.1"]) == 1
    err = capsys.readouterr().err
    assert "unknown configuration key" in err and "mode.optimizer.learning_rate" in err


def test_missing_product_says_which_option_to_set(tmp_path, capsys):
    real = data_path("larcv3/cosmic_tagging_light.h5")
    code = main(["train", f"data.file={real}", "data.image_producer=wire", f"run.output_dir={tmp_path}", *TINY])
    assert code == 1
    err = capsys.readouterr().err
    assert "sparse2d/wire" in err and "sparse2d/sbndwire" in err and "data.image_producer" in err


def test_missing_file_is_an_error(tmp_path, capsys):
    assert main(["train", f"data.file={tmp_path / 'nope.h5'}", f"run.output_dir={tmp_path}"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_train_then_inference_on_files(tmp_path, capsys):
    train_file = generate_file(tmp_path / "train.h5", 4, 11, downsample=4)
    test_file = generate_file(tmp_path / "test.h5", 2, 12, downsample=4)
    common = [f"run.output_dir={tmp_path}", "run.id=cli", "data.downsample=0", *TINY]
    code = main(["train", f"data.file={train_file}", f"data.aux_file={test_file}", "run.iterations=2", "run.aux_iterations=1", *common])
    assert code == 0
    out = capsys.readouterr().out
    assert "24,755 parameters" in out or "parameters" in out
    assert (tmp_path / "cli" / "config.yaml").exists()
    assert main(["iotest", f"data.file={train_file}", "run.iterations=2", *common]) == 0
    assert "img/s" in capsys.readouterr().out
    assert main(["inference", f"data.file={test_file}", "mode.event_displays=1", *common]) == 0
    out = capsys.readouterr().out
    assert "Total_Accuracy" in out and "predictions.h5" in out
    rows = list(csv.DictReader((tmp_path / "cli" / "inference_metrics.csv").open()))
    assert [(r["run"], r["subrun"], r["event"]) for r in rows] == [("1", "0", "0"), ("1", "0", "1")]
    assert len(list((tmp_path / "cli" / "displays").glob("*.png"))) == 1
    # the predictions sit on exactly the input's voxels (larcv3 row-major (wire, tick) indices)
    with open_larcv3(test_file) as src, open_larcv3(tmp_path / "cli" / "predictions.h5") as pred:
        np.testing.assert_array_equal(pred.event_ids, src.event_ids)
        for entry in range(len(src)):
            a = src.read(entry).products["sparse2d/sbndwire"]
            labels = pred.read(entry).products["sparse2d/cosmicseg_pred"]
            scores = pred.read(entry).products["sparse2d/cosmicseg_pred_score"]
            for pa, pl, ps in zip(a, labels, scores, strict=True):
                np.testing.assert_array_equal(pl.index, pa.index)
                np.testing.assert_array_equal(ps.index, pa.index)
                assert pl.meta == pa.meta
                assert set(np.unique(pl.values)) <= {0.0, 1.0, 2.0}
                assert np.all((ps.values > 1 / 3 - 1e-6) & (ps.values <= 1))
    # a checkpoint of another network configuration: the error names the setting to change
    code = main(["inference", f"data.file={test_file}", *common, "network.n_initial_filters=8"])
    assert code == 1
    err = capsys.readouterr().err
    assert "network.n_initial_filters=4" in err
    # no checkpoint at all
    assert main(["inference", f"data.file={test_file}", *common, "run.id=none"]) == 1
    assert "mode.weights_location" in capsys.readouterr().err
