"""hep_resnet on the larcv2 electron/proton images and on a folder of PNG files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import data_path, png_image_folder

from tpcflow.cli.main import main
from tpcflow.errors import DataFormatError
from tpcflow.workflows.image_classify import (
    load_image_folder,
    load_larcv2_images,
    save_image_model,
    train_image_classifier,
)


def test_larcv2_images_read_with_uproot():
    x, y = load_larcv2_images([data_path("larcv2/electron.root"), data_path("larcv2/proton.root")], [0, 1])
    e, p = x[:10], x[10:]
    assert e.shape == p.shape == (10, 3, 256, 256) and x.dtype == np.float32
    assert (e > 0).any() and (p > 0).any() and not np.array_equal(e[0], e[1])


def test_resnet_trains_on_electron_vs_proton(tmp_path):
    x, y = load_larcv2_images([data_path("larcv2/electron.root"), data_path("larcv2/proton.root")], [0, 1])
    assert x.shape == (20, 3, 256, 256) and y.tolist() == [0] * 10 + [1] * 10
    result = train_image_classifier(x, y, classes=["electron", "proton"], epochs=5, batch_size=5, lr=3e-3,
                                    widths=(4, 8), input_pool=4, seed=0)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 5 and all(np.isfinite(losses)) and losses[-1] < losses[0]
    written = save_image_model(result, tmp_path / "model", x.shape[1:])
    scripted = torch.jit.load(written["model"])
    xin = torch.from_numpy(np.log1p(np.maximum(x[:4], 0)) / result.scale)
    torch.testing.assert_close(scripted(xin), result.model(xin))
    assert (tmp_path / "model" / "labels.txt").read_text().split() == ["electron", "proton"]


def test_image_folder_with_labels_csv(tmp_path, capsys):
    png_image_folder(tmp_path, 3)
    x, y, names = load_image_folder(tmp_path / "hep_images", tmp_path / "labels.csv")
    assert x.shape == (3, 4, 32, 32) and names == ["background", "signal"] and y.tolist() == [0, 1, 0]
    (tmp_path / "p.json").write_text('{"epochs": 1, "widths": [4], "input_pool": 1}')
    rc = main(["root-train", "--images", str(tmp_path / "hep_images"), "--labels", str(tmp_path / "labels.csv"),
               "--params", str(tmp_path / "p.json"), "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 0 and (tmp_path / "out" / "model.pt").is_file()
    (tmp_path / "labels.csv").write_text("file,label\nmissing.png,a\n")
    with pytest.raises(DataFormatError, match="missing.png"):
        load_image_folder(tmp_path / "hep_images", tmp_path / "labels.csv")
