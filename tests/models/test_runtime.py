"""models.runtime: one device picker, one precision vocabulary, one torch runner; one TorchScript detector."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tpcflow.errors import ConfigError
from tpcflow.models.checkpoint import save_checkpoint, torch_file_format
from tpcflow.models.registry import NetworkConfig, build_network
from tpcflow.models.runtime import TorchRunner, autocast_context, normalize_precision, pick_device

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = NetworkConfig(n_initial_filters=4, network_depth=2, blocks_per_layer=1, blocks_deepest_layer=1,
                     blocks_final=0, bottleneck_deepest=8)


def test_precision_vocabulary_and_aliases():
    assert [normalize_precision(p) for p in (None, "fp32", "bf16", "fp16", "float16", "mixed", "bfloat16")] == [
        "float32", "float32", "bfloat16", "mixed", "mixed", "mixed", "bfloat16"]
    with pytest.raises(ConfigError, match="'half' is not one of float32, bfloat16, mixed"):
        normalize_precision("half")
    cpu = torch.device("cpu")
    ctx, scaler = autocast_context("fp16", cpu)  # no float16 autocast on CPU: bfloat16, no GradScaler
    with ctx():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    assert scaler is False


def test_device_picker_names_the_setting():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="run.compute_mode=gpu but no CUDA device"):
            pick_device("gpu", setting="run.compute_mode")
        with pytest.raises(ConfigError, match="--device=cuda:1 but no CUDA"):
            pick_device("cuda:1", setting="--device")
    with pytest.raises(ConfigError, match="'toaster' is not a torch device"):
        pick_device("toaster")


def test_runner_matches_the_network_called_directly():
    torch.manual_seed(0)
    net = build_network(TINY).eval()
    x = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
    x.setflags(write=False)  # read-only input (a decoded request): no warning, no change
    with torch.no_grad():
        want = net(torch.from_numpy(x.copy()))
    runner = TorchRunner(net, device="cpu", precision="fp32")
    got = runner(x)
    assert runner.describe() == "cpu, float32"
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    low = TorchRunner(net, device="cpu", precision="bf16")(x)
    assert low[0].dtype == torch.bfloat16


def test_one_torchscript_detector(tmp_path):
    net = build_network(TINY).eval()
    ckpt = save_checkpoint(tmp_path / "c.pt", net, TINY)
    traced = torch.jit.trace(net, torch.rand(1, 3, 8, 8), check_trace=False)
    torch.jit.save(traced, str(tmp_path / "t.pt"))
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04 not really a zip")
    assert torch_file_format(ckpt) == "checkpoint"
    assert torch_file_format(tmp_path / "t.pt") == "torchscript"
    assert torch_file_format(tmp_path / "junk.pt") is None
    assert torch_file_format(tmp_path / "missing.pt") is None
    from tpcflow.serve.http.loading import detect_format

    assert detect_format(ckpt) == "checkpoint" and detect_format(tmp_path / "t.pt") == "torchscript"
