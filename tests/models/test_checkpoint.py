"""Checkpoints: atomic round trip, TorchScript, prefix stripping, clear config-mismatch errors."""

from __future__ import annotations

import pytest
import torch

from tpcflow.errors import ConfigError, DataFormatError
from tpcflow.models.checkpoint import (
    check_compatible,
    load_model,
    read_checkpoint,
    restore_model,
    save_checkpoint,
    strip_prefixes,
)
from tpcflow.models.registry import PRESETS, NetworkConfig, build_network

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = NetworkConfig(n_initial_filters=4, network_depth=2, blocks_per_layer=1, blocks_deepest_layer=1,
                     blocks_final=0, bottleneck_deepest=8)


def _trained(cfg=TINY):
    torch.manual_seed(0)
    net = build_network(cfg)
    with torch.no_grad():
        net(torch.rand(1, 3, 8, 8))  # moves BN running statistics away from their defaults
    return net


def test_round_trip_keeps_weights_config_and_extra(tmp_path):
    net = _trained()
    path = save_checkpoint(tmp_path / "sub" / "ckpt.pt", net, TINY,
                           extra={"iteration": 7, "rng": {"numpy": {"state": {"state": 2**70, "inc": 3}}}})
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.pt"]  # no temporary left behind
    raw = read_checkpoint(path)
    assert raw["format"] == "tpcflow-checkpoint" and raw["version"] == 1 and raw["iteration"] == 7
    assert raw["network"]["n_initial_filters"] == 4
    model, cfg = load_model(path)
    assert cfg == TINY and not model.training
    x = torch.rand(1, 3, 8, 8)
    for a, b in zip(net.eval()(x), model(x)):
        torch.testing.assert_close(a, b)
    with pytest.raises(ConfigError, match="reserved"):
        save_checkpoint(tmp_path / "x.pt", net, TINY, extra={"model": 1})


def test_torchscript_file_loads(tmp_path):
    net = _trained().eval()
    x = torch.rand(1, 3, 8, 8)
    traced = torch.jit.trace(net, x)
    torch.jit.save(traced, str(tmp_path / "net.ts"))
    model, cfg = load_model(tmp_path / "net.ts")
    assert cfg is None
    torch.testing.assert_close(model(x)[:, :, 2], net(x)[:, :, 2])


def test_other_configuration_gives_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", _trained(), TINY)
    other = TINY.replace(n_initial_filters=8)
    with pytest.raises(ConfigError) as err:
        load_model(path, expected=other)
    msg = str(err.value)
    assert "network.n_initial_filters: 4 in the checkpoint, 8 in this configuration" in msg
    assert "network.n_initial_filters=4" in msg
    # the same through restore_model (what a trainer does when resuming)
    with pytest.raises(ConfigError, match="n_initial_filters"):
        restore_model(build_network(other), other, read_checkpoint(path))
    # a preset mismatch suggests the preset
    with pytest.raises(ConfigError, match="set network=a21;"):
        restore_model(torch.nn.Module(), PRESETS["uresnet"], {"network": PRESETS["a21"].to_dict(), "model": {}})
    # a bare state dict that does not fit names the keys and shapes
    with pytest.raises(ConfigError, match="shape mismatches: stem.conv.weight"):
        restore_model(build_network(other), other, {"model": _trained().state_dict()})


def test_prefixes_are_removed_as_whole_prefixes():
    state = {"module._orig_mod.stem.conv.weight": 1, "module.moduleX": 2, "mod.x": 3}
    assert strip_prefixes(state) == {"stem.conv.weight": 1, "moduleX": 2, "mod.x": 3}
    net = _trained()
    prefixed = {f"module.{k}": v for k, v in net.state_dict().items()}
    fresh = build_network(TINY)
    restore_model(fresh, TINY, {"model": prefixed})
    torch.testing.assert_close(fresh.stem.conv.weight, net.stem.conv.weight)


def test_bad_files_are_data_format_errors(tmp_path):
    with pytest.raises(DataFormatError, match="does not exist"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataFormatError, match="junk.pt"):
        load_model(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(DataFormatError, match="not a tpcflow checkpoint"):
        load_model(tmp_path / "plain.pt")


def test_one_compatibility_rule_for_use_and_resume(tmp_path):
    """stack_planes changes neither parameters nor eval outputs: accepted for use, refused on resume."""
    from tpcflow.train.checkpoint import CheckpointManager

    stacked = TINY.replace(stack_planes=True, name="renamed")
    manager = CheckpointManager(tmp_path / "checkpoints", keep=2)
    net = _trained()
    path = manager.save(3, net, TINY, extra={})
    # use: load_model, restore_model and check_compatible agree
    model, _ = load_model(path, expected=stacked)
    check_compatible(read_checkpoint(path)["network"], stacked, path)
    restore_model(build_network(stacked), stacked, read_checkpoint(path), file_path=path)
    x = torch.rand(1, 3, 8, 8)
    stacked_net = build_network(stacked)
    restore_model(stacked_net, stacked, read_checkpoint(path))
    for a, b in zip(model(x), stacked_net.eval()(x)):
        torch.testing.assert_close(a, b)  # eval-mode outputs are the same
    # resume: the training dynamics differ, so the same function refuses it
    with pytest.raises(ConfigError, match="network.stack_planes: False in the checkpoint, True"):
        check_compatible(read_checkpoint(path)["network"], stacked, path, resume=True)
    with pytest.raises(ConfigError, match="stack_planes"):
        manager.load_latest(stacked)
    assert manager.load_latest(TINY.replace(name="renamed"))["iteration"] == 3  # the name never matters
    assert sorted(p.name for p in manager.directory.iterdir()) == ["checkpoint-00000003.pt"]


def test_unreadable_checkpoint_names_the_file(tmp_path):
    from tpcflow.train.checkpoint import CheckpointManager

    manager = CheckpointManager(tmp_path)
    (tmp_path / "checkpoint-00000001.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataFormatError, match="checkpoint-00000001.pt"):
        manager.load_latest(TINY)


def test_a_file_that_is_no_checkpoint_never_gets_torchs_advice_to_unpickle_it(tmp_path):
    """torch's message for a refused unpickle says weights_only=False "will likely succeed": code execution."""
    import os
    import zipfile

    random_file = tmp_path / "random.pt"
    random_file.write_bytes(os.urandom(3000))
    code_pickle = tmp_path / "code.pt"
    torch.save({"format": "tpcflow-checkpoint", "fn": zipfile.ZipFile}, code_pickle)  # a class: not data
    not_torch_zip = tmp_path / "other.pt"
    with zipfile.ZipFile(not_torch_zip, "w") as zf:
        zf.writestr("readme.txt", "hello")
    for path, message in ((random_file, "not a torch.save archive"), (not_torch_zip, "not a torch.save archive"),
                          (code_pickle, "objects other than plain data")):
        with pytest.raises(DataFormatError, match=message) as info:
            read_checkpoint(path)
        assert "weights_only` set to `False`" not in str(info.value) and "will likely succeed" not in str(info.value)
        assert str(path) in str(info.value)


def test_a_checkpoint_named_code_pt_is_a_checkpoint(tmp_path):
    """The archive's members are named after the file: "code.pt" holds "code/data.pkl", not TorchScript code."""
    from tpcflow.models.checkpoint import torch_file_format

    path = save_checkpoint(tmp_path / "code.pt", build_network(TINY), TINY)
    assert torch_file_format(path) == "checkpoint"
    model, cfg = load_model(path)
    assert cfg == TINY
