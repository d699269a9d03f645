"""Training loop: exact resume, averaged gradient accumulation, validation, logs, bad input."""

from __future__ import annotations

import csv

import pytest
import torch
import yaml
from conftest import TINY_NETWORK

from tpcflow.config import load_config
from tpcflow.errors import ConfigError, OutputError
from tpcflow.models.checkpoint import read_checkpoint
from tpcflow.train.loop import train

TINY = [
    "data.synthetic=true",
    "data.downsample=4",
    "data.synthetic_events=6",
    "run.minibatch_size=2",
    "run.progress=false",
    "run.num_threads=1",
    *TINY_NETWORK,
]


def cfg_of(tmp_path, *extra):
    return load_config(TINY + [f"run.output_dir={tmp_path}", *extra])


def quiet(*_a, **_k):
    pass


@pytest.mark.parametrize("conv_mode", ["2D", "sparse"])
def test_resume_reproduces_uninterrupted_losses(tmp_path, conv_mode):
    """Also for the sparse network, which trains on its voxels (TrainNetwork.step)."""
    common = ["run.iterations=6", "mode.optimizer.lr_schedule=one_cycle", "mode.checkpoint_iteration=3",
              "run.aux_iterations=0", f"network.conv_mode={conv_mode}"]
    full = train(cfg_of(tmp_path, "run.id=full", *common), echo=quiet)
    first = train(cfg_of(tmp_path, "run.id=cut", *common), echo=quiet, stop_at=3)
    assert len(first.losses) == 3
    second = train(cfg_of(tmp_path, "run.id=cut", *common), echo=quiet)
    assert second.start_iteration == 3
    assert first.losses + second.losses == full.losses  # bit-exact on CPU
    a = read_checkpoint(full.checkpoint)["model"]
    b = read_checkpoint(second.checkpoint)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    # the losses change from step to step: the run really trained
    assert len(set(full.losses)) > 1


def test_the_sparse_network_trains_on_the_loaders_voxels_as_on_the_dense_detour(tmp_path, monkeypatch):
    """Issue 14: a sparse run takes voxel minibatches from the loader (no dense batch is made sparse), with
    the same losses and validation metrics, bit for bit, as densifying and sparsifying again."""
    from tpcflow.models.sparse.minibatch import SparseMinibatch

    common = ["run.iterations=3", "run.aux_iterations=3", "network.conv_mode=sparse"]

    def densified(*_a, **_k):
        raise AssertionError("a dense minibatch was made sparse")

    with monkeypatch.context() as m:
        m.setattr(SparseMinibatch, "from_dense", classmethod(densified))
        voxels = train(cfg_of(tmp_path, "run.id=vox", *common), echo=quiet)
    monkeypatch.setattr("tpcflow.train.loop.takes_voxels", lambda *a, **k: False)  # the dense detour
    detour = train(cfg_of(tmp_path, "run.id=detour", *common), echo=quiet)
    assert voxels.losses == detour.losses and len(set(voxels.losses)) > 1
    assert voxels.validation == detour.validation and voxels.validation


def test_a_resumed_run_logs_each_iteration_once(tmp_path):
    """Rows written after the last checkpoint of a killed run are computed again on resume, not repeated."""
    import csv

    common = ["run.id=kill", "run.iterations=5", "mode.checkpoint_iteration=2", "run.aux_iterations=0"]
    train(cfg_of(tmp_path, *common), echo=quiet, stop_at=3)  # killed after iteration 3, checkpoint at 2
    second = train(cfg_of(tmp_path, *common), echo=quiet)
    assert second.start_iteration == 2
    rows = list(csv.DictReader((tmp_path / "kill" / "metrics.csv").open()))
    assert [int(r["iteration"]) for r in rows if r["split"] == "train"] == [1, 2, 3, 4, 5]
    assert float(rows[2]["loss"]) == pytest.approx(second.losses[0], rel=1e-6)  # iteration 3 as the resumed run computed it


def test_gradient_accumulation_averages(tmp_path):
    """One step over 2 images equals 2 accumulated steps of 1 image (no BatchNorm, plain mean CE)."""
    common = [
        "run.iterations=1",
        "run.aux_iterations=0",
        "data.shuffle=false",
        "network.normalization=none",
        "mode.optimizer.loss_balance_scheme=none",
        "mode.optimizer.name=sgd",
        "mode.optimizer.momentum=0",
        "mode.optimizer.learning_rate=0.5",
    ]
    one = train(cfg_of(tmp_path, "run.id=one", "run.minibatch_size=2", *common), echo=quiet)
    acc = train(
        cfg_of(tmp_path, "run.id=acc", "run.minibatch_size=1", "mode.optimizer.gradient_accumulation=2", *common),
        echo=quiet,
    )
    init = train(cfg_of(tmp_path, "run.id=init", *common[:-1], "mode.optimizer.learning_rate=0.0"), echo=quiet)
    a = read_checkpoint(one.checkpoint)["model"]
    b = read_checkpoint(acc.checkpoint)["model"]
    c = read_checkpoint(init.checkpoint)["model"]
    moved = sum(float((a[k] - c[k]).abs().sum()) for k in a)
    assert moved > 0
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
    assert acc.losses[0] == pytest.approx(one.losses[0], rel=1e-5)


def test_run_directory_logs_and_checkpoints(tmp_path, capsys):
    res = train(
        cfg_of(tmp_path, "run.id=logs", "run.iterations=4", "run.aux_iterations=2", "mode.checkpoint_iteration=1",
               "mode.keep_checkpoints=2"),
    )
    out = capsys.readouterr().out
    assert "-- CONFIG --" in out and "parameters" in out
    run = tmp_path / "logs"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["run"]["iterations"] == 4 and saved["network"]["n_initial_filters"] == 4
    assert saved["network"]["network_depth"] == 3
    # the newest two rotate; best.pt (the best validation's network) stays beside them
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "best.pt", "checkpoint-00000003.pt", "checkpoint-00000004.pt"]
    assert res.best["iteration"] in (2, 4) and res.best_checkpoint == run / "checkpoints" / "best.pt"
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    val = [r for r in rows if r["split"] == "val"]
    assert {"Average/Cosmic_Precision", "Average/Neutrino_Recall", "plane2/Cosmic_Recall"} <= set(val[0])
    assert [r["split"] for r in rows].count("train") == 4
    assert [r["split"] for r in rows].count("val") == 2
    assert "Average/mIoU" in rows[0] and float(rows[0]["loss"]) > 0
    assert any((run / "tensorboard").iterdir())
    assert res.validation and 0.0 <= res.validation["Average/Total_Accuracy"] <= 1.0


def test_bfloat16_and_channels_last_train_on_cpu(tmp_path):
    res = train(
        cfg_of(tmp_path, "run.id=bf16", "run.iterations=2", "run.aux_iterations=0", "run.precision=bfloat16",
               "run.channels_last=true", "run.activation_checkpointing=true"),
        echo=quiet,
    )
    assert len(res.losses) == 2 and all(l == l and l > 0 for l in res.losses)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mixed_precision_on_gpu(tmp_path):
    res = train(cfg_of(tmp_path, "run.id=gpu", "run.iterations=2", "run.precision=mixed", "run.compute_mode=gpu"),
                echo=quiet)
    assert len(res.losses) == 2


def test_shape_not_divisible_says_what_to_change(tmp_path):
    with pytest.raises(ConfigError, match=r"network.network_depth<=3|data.downsample") as info:
        train(cfg_of(tmp_path, "run.id=shape", "network.network_depth=5"), echo=quiet)
    assert "80x128" in str(info.value)


def test_resume_with_other_settings_is_refused_with_both_ways_out(tmp_path):
    train(cfg_of(tmp_path, "run.id=net", "run.iterations=1", "run.aux_iterations=0"), echo=quiet)
    saved = (tmp_path / "net" / "config.yaml").read_text()
    for change in (["network.n_initial_filters=6"], ["mode.optimizer.learning_rate=0.1"], ["network=a21"]):
        with pytest.raises(ConfigError) as info:
            train(cfg_of(tmp_path, "run.id=net", "run.iterations=2", "run.aux_iterations=0", *change), echo=quiet)
        msg = str(info.value)
        key = change[0].split("=")[0]
        assert f"{key}:" in msg and "run.id=net-2" in msg and "run.resume=false" in msg, msg
        # the failed run leaves the saved configuration as it was
        assert (tmp_path / "net" / "config.yaml").read_text() == saved
    # more iterations, another logging interval: the same experiment, resumed
    res = train(cfg_of(tmp_path, "run.id=net", "run.iterations=2", "run.aux_iterations=0", "mode.logging_iteration=2"),
                echo=quiet)
    assert res.start_iteration == 1 and len(res.losses) == 1
    # starting over on purpose deletes the earlier checkpoints, so none is later taken for this run's
    res = train(cfg_of(tmp_path, "run.id=net", "run.iterations=1", "run.aux_iterations=0", "run.resume=false",
                       "network.n_initial_filters=6"), echo=quiet)
    assert res.start_iteration == 0
    assert [p.name for p in (tmp_path / "net" / "checkpoints").iterdir()] == ["checkpoint-00000001.pt"]
    assert "n_initial_filters: 6" in (tmp_path / "net" / "config.yaml").read_text()


def test_resume_of_a_run_without_config_yaml_names_the_network_setting(tmp_path):
    train(cfg_of(tmp_path, "run.id=net", "run.iterations=1", "run.aux_iterations=0"), echo=quiet)
    (tmp_path / "net" / "config.yaml").unlink()
    with pytest.raises(ConfigError, match=r"network.n_initial_filters=4") as info:
        train(cfg_of(tmp_path, "run.id=net", "run.iterations=2", "network.n_initial_filters=6"), echo=quiet)
    assert "checkpoint" in str(info.value)


def test_gpu_request_without_gpu_is_config_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="compute_mode"):
        train(cfg_of(tmp_path, "run.id=g", "run.compute_mode=gpu"), echo=quiet)


@pytest.mark.parametrize("conv_mode", ["3D", "sparse"])
def test_other_network_variants_train(tmp_path, conv_mode):
    res = train(
        cfg_of(tmp_path, f"run.id={conv_mode}", "run.iterations=1", "run.aux_iterations=1", f"network.conv_mode={conv_mode}"),
        echo=quiet,
    )
    assert len(res.losses) == 1 and res.losses[0] > 0
    assert 0.0 <= res.validation["Average/mIoU"] <= 1.0


def test_resume_mid_epoch_from_larcv3_files(tmp_path):
    """Files through the BatchLoader: the resumed run continues mid-epoch with the same minibatches."""
    from tpcflow.sim.sbnd import generate_file

    train_file = generate_file(tmp_path / "train.h5", 6, 3, downsample=4)
    val_file = generate_file(tmp_path / "val.h5", 2, 4, downsample=4)
    common = ["run.iterations=6", "data.synthetic=false", "data.downsample=0", f"data.file={train_file}",
              f"data.aux_file={val_file}", "run.aux_iterations=2", "mode.checkpoint_iteration=2", "data.num_threads=1"]
    full = train(cfg_of(tmp_path, "run.id=ffull", *common), echo=quiet)
    train(cfg_of(tmp_path, "run.id=fcut", *common), echo=quiet, stop_at=4)  # 3 minibatches per epoch
    rest = train(cfg_of(tmp_path, "run.id=fcut", *common), echo=quiet)
    assert rest.start_iteration == 4
    assert rest.losses == full.losses[4:]
    assert rest.validation == full.validation


def test_file_source_hands_out_loader_views_without_copies(tmp_path):
    """The trainer takes the loader's shared-memory batches as they are (no copy per minibatch)."""
    from tpcflow.config import DataConfig
    from tpcflow.sim.sbnd import generate_file
    from tpcflow.train.data import FileSource

    path = generate_file(tmp_path / "f.h5", 4, 3, downsample=4)
    source = FileSource([path], DataConfig(file=str(path), downsample=0, num_threads=1), 2, cycle=False,
                        shuffle=False)
    try:
        batch = next(source)
        assert not batch["image"].flags.owndata and not batch["label"].flags.owndata
        assert batch["image"].shape == (2, 3, *source.shape) and float(batch["image"].sum()) > 0
    finally:
        source.close()


def test_an_output_dir_that_is_a_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match=r"cannot write the run directory .*run.output_dir=.*runs"):
        train(load_config(TINY + [f"run.output_dir={blocker}", "run.iterations=1"]), echo=quiet)


def test_a_checkpoint_the_disk_refuses_does_not_lose_the_run(tmp_path, monkeypatch):
    """The first checkpoint fails to write: training goes on and the next one is written; a failing
    last checkpoint is an error naming the last good one."""
    from tpcflow.train.checkpoint import CheckpointManager

    real_save = CheckpointManager.save
    failures = {"left": 1}

    def flaky_save(self, iteration, *args, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise OSError(28, "No space left on device")
        return real_save(self, iteration, *args, **kwargs)

    monkeypatch.setattr(CheckpointManager, "save", flaky_save)
    lines = []
    common = ["run.id=disk", "mode.checkpoint_iteration=1", "run.aux_iterations=0"]
    res = train(cfg_of(tmp_path, *common, "run.iterations=2"), echo=lines.append)
    assert len(res.losses) == 2 and res.checkpoint.name == "checkpoint-00000002.pt"
    assert any("iteration 1 could not be written" in str(line) and "No space left" in str(line) for line in lines)
    failures["left"] = 1
    with pytest.raises(OutputError, match=r"iteration 3 .*last good checkpoint is .*checkpoint-00000002.pt"):
        train(cfg_of(tmp_path, *common, "run.iterations=3"), echo=quiet)


def test_a_dense_checkpoint_starts_the_sparse_network(tmp_path):
    """Issue 14 (inter-op): mode.weights_location gives a new sparse run the weights of a dense (2D) run; its
    first loss is the sparse network's loss with exactly those weights, and other differences are refused."""
    dense = train(cfg_of(tmp_path, "run.id=dense", "run.iterations=2", "run.aux_iterations=0"), echo=quiet)
    said = []
    warm = train(cfg_of(tmp_path, "run.id=warm", "run.iterations=1", "run.aux_iterations=0",
                        "network.conv_mode=sparse", f"mode.weights_location={dense.checkpoint}"), echo=said.append)
    assert any("initial weights from" in line and "conv_mode=2D" in line for line in said)
    start = read_checkpoint(dense.checkpoint)["model"]
    fresh = train(cfg_of(tmp_path, "run.id=fresh", "run.iterations=1", "run.aux_iterations=0",
                         "network.conv_mode=sparse"), echo=quiet)
    assert warm.losses != fresh.losses  # the weights changed the run
    # the warm run's weights moved from the dense run's, not from a fresh initialisation
    moved = read_checkpoint(warm.checkpoint)["model"]
    near = sum(float((moved[k].float() - start[k].float()).abs().max()) for k in start if start[k].is_floating_point())
    far = sum(float((moved[k].float() - read_checkpoint(fresh.checkpoint)["model"][k].float()).abs().max())
              for k in start if start[k].is_floating_point())
    assert near < far
    with pytest.raises(ConfigError, match="n_initial_filters"):
        train(cfg_of(tmp_path, "run.id=other", "run.iterations=1", "run.aux_iterations=0", "network.conv_mode=sparse",
                     "network.n_initial_filters=8", f"mode.weights_location={dense.checkpoint}"), echo=quiet)


def test_the_best_validation_is_kept_and_early_stopping_ends_the_run(tmp_path, monkeypatch):
    """Issue 15: checkpoints/best.pt holds the network of the best validation (mode.best_metric); with
    mode.early_stopping=N the run stops after N validations without a better one; a resumed run keeps the best."""
    import tpcflow.train.loop as loop

    script = iter([0.50, 0.70, 0.60, 0.65, 0.69, 0.90, 0.95, 0.5])
    real = loop.evaluate

    def scripted(net, source, max_batches=None):
        metrics = real(net, source, max_batches=max_batches)
        return {**metrics, "Average/mIoU": next(script)}

    monkeypatch.setattr(loop, "evaluate", scripted)
    said = []
    common = ["run.id=best", "run.aux_iterations=2", "mode.checkpoint_iteration=100", "mode.early_stopping=3"]
    res = train(cfg_of(tmp_path, "run.iterations=20", *common), echo=said.append)
    assert res.stopped_early and len(res.losses) == 10  # validations at 2, 4 (best), 6, 8, 10: stop
    assert res.best == {"metric": "Average/mIoU", "value": 0.70, "iteration": 4, "stale": 3}
    best = read_checkpoint(res.best_checkpoint)
    assert res.best_checkpoint.name == "best.pt" and best["iteration"] == 4 and best["best"]["value"] == 0.70
    assert res.checkpoint.name == "checkpoint-00000010.pt"  # the stopping point is saved for a resume
    assert any("early stopping at iteration 10" in line for line in said)
    # resumed with patience to spare: the best so far comes back from the checkpoint, then improves
    more = train(cfg_of(tmp_path, "run.iterations=14", *common[:-1], "mode.early_stopping=0"), echo=quiet)
    assert more.start_iteration == 10 and not more.stopped_early
    assert more.best["value"] == 0.95 and more.best["iteration"] == 14
    assert read_checkpoint(more.best_checkpoint)["iteration"] == 14
    with pytest.raises(ConfigError, match="not a validation metric"):
        train(cfg_of(tmp_path, "run.id=bad", "run.iterations=2", "run.aux_iterations=1",
                     "mode.best_metric=Average/nope"), echo=quiet)


def test_warmup_decay_counts_epochs_of_the_training_set(tmp_path):
    """An epoch is len(source) minibatches (6 events / 2 per minibatch = 3 steps), not that over the minibatch
    size again: the warm-up of 2 epochs lasts 6 steps, then the decay starts."""
    from tpcflow.train.optim import warmup_decay_factor

    cfg = cfg_of(tmp_path, "run.id=lr", "run.iterations=9", "run.aux_iterations=0", "mode.logging_iteration=1",
                 "mode.optimizer.learning_rate=1e-3", "mode.optimizer.lr_schedule=warmup_decay",
                 "mode.optimizer.warmup_epochs=2", "mode.optimizer.decay_start_epoch=2",
                 "mode.optimizer.decay_rate=0.5", "mode.optimizer.lr_floor=1e-4")
    result = train(cfg, echo=quiet)
    rows = [r for r in csv.DictReader((result.run_dir / "metrics.csv").open()) if r["split"] == "train"]
    logged = [float(r["lr"]) for r in rows]
    expected = [1e-3 * warmup_decay_factor(step, cfg.mode.optimizer, 3.0) for step in range(9)]
    assert logged == pytest.approx(expected, rel=1e-6)
    assert logged[5] < logged[6] == pytest.approx(1e-3)  # the peak comes after 2 epochs = 6 steps
