"""Inference on a user's real file: every entry, with or without labels, at the training resolution,
written on the input's own voxels exactly as ``tpcflow submit`` writes them."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import TINY_NETWORK, data_path

from tpcflow.config import load_config
from tpcflow.errors import ConfigError
from tpcflow.io import Event, open_larcv3, write_larcv3
from tpcflow.models.checkpoint import data_section, input_pooling, read_checkpoint
from tpcflow.train.inference import infer
from tpcflow.train.loop import train

PRED, SCORE = "sparse2d/cosmicseg_pred", "sparse2d/cosmicseg_pred_score"


def quiet(*_a, **_k):
    pass


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny network trained on synthetic events at data.downsample=4 (80x128 images)."""
    out = tmp_path_factory.mktemp("inference")
    cfg = load_config(["data.synthetic=true", "data.downsample=4", "data.synthetic_events=4", "run.minibatch_size=2",
                       "run.iterations=1", "run.aux_iterations=0", "run.progress=false", "run.num_threads=1",
                       f"run.output_dir={out}", "run.id=train", *TINY_NETWORK])
    res = train(cfg, echo=quiet)
    return out, res.checkpoint


def _infer(out, ckpt, file, *extra, run="train"):
    # the run's own config.yaml as the base: its run.iterations=1 must not cap inference
    cfg = load_config(["data.synthetic=false", f"data.file={file}", f"mode.weights_location={ckpt}", "run.id=infer", "run.minibatch_size=2",
                       "mode.event_displays=1", *extra], base=out / run / "config.yaml", mode="inference")
    return infer(cfg, echo=quiet)


def test_checkpoint_stores_the_training_resolution(trained):
    _out, ckpt = trained
    data = read_checkpoint(ckpt)["data"]
    assert data == data_section(4, (80, 128))
    assert input_pooling(data, (1280, 2048)) == 4      # SBND's full grid pools onto it
    assert input_pooling(data, (80, 128)) == 0         # already at the training resolution
    assert input_pooling(data, (1008, 3456)) is None   # MicroBooNE's grid: another one
    assert input_pooling(None, (1280, 2048)) is None


def test_whole_real_file_with_and_without_labels_and_through_submit(trained, tmp_path):
    out, ckpt = trained
    real = data_path("larcv3/cosmic_tagging_light.h5")
    with open_larcv3(real) as r:
        n = len(r)
        events = [r.read(e) for e in range(n)]
    assert n % 2 == 1  # a partial last minibatch: 5 entries in minibatches of 2

    res = _infer(out, ckpt, real, "data.downsample=4")
    assert res.events == n
    rows = list(csv.DictReader(res.metrics_csv.open()))
    assert [int(r["entry"]) for r in rows] == list(range(n)) and "Average/mIoU" in rows[0]

    # the same charge without the label product (real data): it runs, with no metrics columns
    unlabeled = tmp_path / "unlabeled.h5"
    write_larcv3(unlabeled, [Event(ev.event_id, {"sparse2d/sbndwire": ev.products["sparse2d/sbndwire"]})
                             for ev in events])
    res2 = _infer(out, ckpt, unlabeled, "data.downsample=4", f"mode.output_file={tmp_path / 'unlabeled_pred.h5'}")
    rows2 = list(csv.DictReader(res2.metrics_csv.open()))
    assert res2.events == n and not any("mIoU" in k for k in rows2[0])
    assert [r["voxels"] for r in rows2] == [r["voxels"] for r in rows]

    # the predictions sit on the input's own voxels and agree with the labelled run and with submit
    from tpcflow.serve.mdp.inprocess import segment_via_broker

    served = tmp_path / "served.h5"
    segment_via_broker(ckpt, [real], served, device="cpu", progress=False)
    same = total = 0
    with open_larcv3(res.output_file) as a, open_larcv3(res2.output_file) as b, open_larcv3(served) as s:
        assert len(a) == len(b) == len(s) == n
        for e, ev in enumerate(events):
            charge = ev.products["sparse2d/sbndwire"]
            pa, pb, ps = (f.read(e).products for f in (a, b, s))
            for p, q in enumerate(charge):
                for prod in (pa, pb, ps):
                    np.testing.assert_array_equal(prod[PRED][p].index, q.index)
                    assert prod[PRED][p].meta == q.meta
                np.testing.assert_array_equal(pa[PRED][p].values, pb[PRED][p].values)
                np.testing.assert_allclose(pa[SCORE][p].values, ps[SCORE][p].values, atol=1e-4)
                same += int(np.count_nonzero(pa[PRED][p].values == ps[PRED][p].values))
                total += len(q.index)
    assert total > 100_000 and same >= 0.999 * total  # float ties aside, the worker pools as the loader does


def test_wrong_resolution_is_refused_with_the_value_to_set(trained):
    out, ckpt = trained
    real = data_path("larcv3/cosmic_tagging_light.h5")
    with pytest.raises(ConfigError, match=r"trained on 80x128 images \(data.downsample=4\).*set data.downsample=4"):
        _infer(out, ckpt, real, "data.downsample=1")


def test_a_file_beside_synthetic_data_is_refused_not_ignored(trained):
    out, ckpt = trained
    cfg = load_config([f"data.file={data_path('larcv3/cosmic_tagging_light.h5')}", f"mode.weights_location={ckpt}"],
                      base=out / "train" / "config.yaml", mode="inference")
    with pytest.raises(ConfigError, match="data.synthetic=false"):
        infer(cfg, echo=quiet)


def test_explicit_run_iterations_still_limits_inference(trained):
    out, ckpt = trained
    res = _infer(out, ckpt, data_path("larcv3/cosmic_tagging_light.h5"), "data.downsample=4", "run.iterations=1")
    assert res.events == 2


def test_a_validation_file_smaller_than_its_minibatch_names_the_option(trained, tmp_path):
    out, _ = trained
    real = data_path("larcv3/cosmic_tagging_light.h5")
    with open_larcv3(real) as r:
        write_larcv3(tmp_path / "val.h5", r.read_range(0, 1))
    cfg = load_config([f"data.file={real}", f"data.aux_file={tmp_path / 'val.h5'}", "data.downsample=4",
                       "run.aux_minibatch_size=2", "run.iterations=1", "run.progress=false",
                       f"run.output_dir={tmp_path}", *TINY_NETWORK])
    with pytest.raises(ConfigError, match=r"no batch would be made\n\(reading data.aux_file=.*run.aux_minibatch_size=2"):
        train(cfg, echo=quiet)


def test_training_files_need_only_the_products_the_run_reads(trained, tmp_path):
    """The real file (charge, labels, clusters, particles) beside a copy with charge and labels only."""
    out, _ = trained
    real = data_path("larcv3/cosmic_tagging_light.h5")
    with open_larcv3(real) as r:
        events = r.read_range(0, 2)
    slim = tmp_path / "slim.h5"
    keep = ("sparse2d/sbndwire", "sparse2d/sbnd_cosmicseg")
    write_larcv3(slim, [Event(ev.event_id, {k: ev.products[k] for k in keep}) for ev in events])
    cfg = load_config([f"data.file={real},{slim}", "data.downsample=4", "run.iterations=1", "run.progress=false",
                       "run.aux_iterations=0", "run.num_threads=1", f"run.output_dir={tmp_path}", *TINY_NETWORK])
    res = train(cfg, echo=quiet)
    assert len(res.losses) == 1 and np.isfinite(res.losses[0])


@pytest.mark.parametrize("downsample", [4, 2])
def test_the_sparse_network_infers_on_its_voxels_with_the_dense_paths_outputs(tmp_path, monkeypatch, downsample):
    """Issue 14: tpcflow inference of a sparse network takes voxel minibatches from the loader (no dense
    batch) into forward_sparse (no dense logits), and writes the same predictions, scores and per-entry
    metrics as the dense detour did, on the real file."""
    from tpcflow.models.sparse.minibatch import SparseMinibatch
    from tpcflow.train.network import TrainNetwork

    cfg = load_config([
        "data.synthetic=true", f"data.downsample={downsample}", "data.synthetic_events=2", "run.minibatch_size=2",
        "run.iterations=1", "run.aux_iterations=0", "run.progress=false", "run.num_threads=1",
        f"run.output_dir={tmp_path}", "run.id=sparse", "network.conv_mode=sparse", *TINY_NETWORK])
    ckpt = train(cfg, echo=quiet).checkpoint
    real = data_path("larcv3/cosmic_tagging_light.h5")

    def no_dense_logits(self, x):
        raise AssertionError("the sparse network's inference computed dense logits")

    with monkeypatch.context() as m:
        m.setattr(TrainNetwork, "forward", no_dense_logits)
        m.setattr(SparseMinibatch, "from_dense", classmethod(no_dense_logits))  # the loader's voxels, not densified
        sparse = _infer(tmp_path, ckpt, real, f"data.downsample={downsample}",
                        f"mode.output_file={tmp_path / 'sparse.h5'}", "run.id=s", run="sparse")
    monkeypatch.setattr(TrainNetwork, "sparse", property(lambda self: False))  # the dense detour
    monkeypatch.setattr("tpcflow.train.inference.takes_voxels", lambda *a, **k: False)
    dense = _infer(tmp_path, ckpt, real, f"data.downsample={downsample}", f"mode.output_file={tmp_path / 'dense.h5'}",
                   "run.id=d", run="sparse")
    assert sparse.events == dense.events == 5
    with open_larcv3(tmp_path / "sparse.h5") as a, open_larcv3(tmp_path / "dense.h5") as b:
        for e in range(5):
            ea, eb = a.read(e), b.read(e)
            for key in (PRED, SCORE):
                for pa, pb in zip(ea.products[key], eb.products[key], strict=True):
                    np.testing.assert_array_equal(pa.index, pb.index)
                    np.testing.assert_allclose(pa.values, pb.values, rtol=1e-5, atol=1e-6)
    for ra, rb in zip(sparse.rows, dense.rows, strict=True):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert ra[k] == pytest.approx(rb[k], rel=1e-9, abs=1e-9, nan_ok=True), k


@pytest.mark.parametrize("downsample", [0, 2])
def test_the_sparse_source_gives_the_dense_sources_voxels_on_the_real_file(downsample):
    """Issue 14: the loader's voxel minibatches (pooled sparsely, never densified) equal the voxels of the
    dense minibatches (pooled densely) on the real SBND events, values bit for bit."""
    import torch

    from tpcflow.config import DataConfig
    from tpcflow.models.sparse.minibatch import SparseMinibatch
    from tpcflow.train.data import FileSource

    real = data_path("larcv3/cosmic_tagging_light.h5")
    data = DataConfig(file=str(real), downsample=downsample, num_threads=1)
    dense = FileSource([real], data, 2, cycle=False, shuffle=False)
    sparse = FileSource([real], data, 2, cycle=False, shuffle=False, sparse=True)
    try:
        n = 0
        for d, s in zip(dense, sparse, strict=True):
            np.testing.assert_array_equal(d["entries"], s["entries"])
            want = SparseMinibatch.from_dense(torch.as_tensor(d["image"]), torch.as_tensor(d["label"]))
            got = s["voxels"]
            for a, b in zip(got.coords + got.features + got.labels, want.coords + want.features + want.labels,
                            strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
            torch.testing.assert_close(got.missed, want.missed, rtol=0, atol=0)
            n += got.batch_size
        assert n == 5  # every event, the last minibatch holds one
    finally:
        dense.close()
        sparse.close()
