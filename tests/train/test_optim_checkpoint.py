"""Optimisers, LR schedules, checkpoint files and RNG state round trips."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from tpcflow.config import OptimizerConfig
from tpcflow.errors import ConfigError, DataFormatError
from tpcflow.models.checkpoint import read_checkpoint
from tpcflow.train.checkpoint import CheckpointManager, get_rng_state, set_rng_state
from tpcflow.train.optim import build_optimizer, build_scheduler, warmup_decay_factor


def _lrs(cfg: OptimizerConfig, steps: int, steps_per_epoch: float) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([p], cfg)
    sched = build_scheduler(opt, cfg, total_steps=steps, steps_per_epoch=steps_per_epoch)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_optimizers():
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(build_optimizer(p, OptimizerConfig(name="adam")), torch.optim.Adam)
    sgd = build_optimizer(p, OptimizerConfig(name="sgd", momentum=0.5, learning_rate=0.1))
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.5
    with pytest.raises(ConfigError):
        build_optimizer(p, OptimizerConfig(name="lamb"))


def test_flat_and_one_cycle():
    flat = _lrs(OptimizerConfig(learning_rate=0.01), 5, 10)
    assert flat == [0.01] * 5
    cyc = _lrs(OptimizerConfig(learning_rate=0.01, lr_schedule="one_cycle"), 20, 10)
    peak = int(np.argmax(cyc))
    assert 0 < peak < 19 and max(cyc) == pytest.approx(0.01, rel=1e-3)
    assert cyc[0] < 0.01 / 10 and cyc[-1] < cyc[0]


def test_warmup_decay_matches_reference_formula():
    cfg = OptimizerConfig(learning_rate=3e-4, lr_schedule="warmup_decay", warmup_epochs=1, decay_start_epoch=3,
                          decay_rate=0.999, lr_floor=1e-4)
    spe = 10.0  # optimizer steps per epoch
    lrs = _lrs(cfg, 60, spe)
    assert lrs[0] == pytest.approx(1e-4)  # warm-up starts at the floor
    assert lrs[5] == pytest.approx(1e-4 + 2e-4 * 0.5)  # half-way through epoch 0
    assert lrs[10] == pytest.approx(3e-4) and lrs[29] == pytest.approx(3e-4)  # flat
    epoch = 45 / spe
    assert lrs[45] == pytest.approx((3e-4 - 1e-4) * math.exp(-0.999 * (epoch - 3)) + 1e-4)
    assert warmup_decay_factor(10**6, cfg, spe) == pytest.approx(1e-4 / 3e-4)


def test_rng_state_round_trip():
    set_rng_state(get_rng_state())
    state = get_rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_checkpoint_manager_keeps_last_k(tmp_path):
    from tpcflow.config.network import NetworkConfig

    net = torch.nn.Linear(2, 2)
    cfg = NetworkConfig(n_initial_filters=2, network_depth=1)
    mgr = CheckpointManager(tmp_path / "ck", keep=2)
    for it in (1, 2, 3):
        mgr.save(it, net, cfg, {"rng": get_rng_state(), "loader": {"epoch": 0, "cursor": it}})
    names = [p.name for p in mgr.list()]
    assert names == ["checkpoint-00000002.pt", "checkpoint-00000003.pt"]
    assert not [p for p in (tmp_path / "ck").iterdir() if "tmp" in p.name]  # atomic: no leftovers
    ck = read_checkpoint(mgr.latest())
    assert ck["iteration"] == 3 and ck["loader"]["cursor"] == 3
    torch.testing.assert_close(ck["model"]["weight"], net.weight.detach())


def test_read_checkpoint_rejects_garbage(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataFormatError, match="bad.pt"):
        read_checkpoint(bad)
    with pytest.raises(DataFormatError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pt")
    torch.save({"model": {}}, tmp_path / "foreign.pt")
    with pytest.raises(DataFormatError, match="not a tpcflow checkpoint"):
        read_checkpoint(tmp_path / "foreign.pt")
