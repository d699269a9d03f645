"""Optimisers and learning-rate schedules.

Source: CosmicTagger ``src/utils/torch/trainer.py`` (master, 156c480): Adam at 3e-4 with
no weight decay; the schedule "warm-up then flat then exponential decay" in epochs,
``epoch = step * minibatch_size / dataset_size``:

* epoch < warmup_epochs: linear from ``lr_floor`` to ``learning_rate``;
* warmup_epochs <= epoch < decay_start_epoch: flat at ``learning_rate``;
* later: ``(learning_rate - lr_floor) * exp(-decay_rate * (epoch - decay_start_epoch)) + lr_floor``.
"""

from __future__ import annotations

import math

import torch

from tpcflow.config import OptimizerConfig
from tpcflow.errors import ConfigError

__all__ = ["build_optimizer", "build_scheduler", "warmup_decay_factor"]


def build_optimizer(params, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """Return Adam or SGD over ``params`` with ``cfg``'s learning rate and weight decay.

    Raises
    ------
    ConfigError
        If ``cfg.name`` is not ``adam`` or ``sgd``.
    """
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.learning_rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ConfigError(f"mode.optimizer.name: {cfg.name!r} is not an optimizer\nAvailable: 'adam', 'sgd'")


def warmup_decay_factor(step: int, cfg: OptimizerConfig, steps_per_epoch: float) -> float:
    """Return lr(step) / learning_rate for the reference warm-up + decay schedule."""
    lr, floor = cfg.learning_rate, min(cfg.lr_floor, cfg.learning_rate)
    epoch = step / max(steps_per_epoch, 1e-12)
    if epoch < cfg.warmup_epochs:
        value = floor + (lr - floor) * epoch / cfg.warmup_epochs
    elif epoch < cfg.decay_start_epoch:
        value = lr
    else:
        value = (lr - floor) * math.exp(-cfg.decay_rate * (epoch - cfg.decay_start_epoch)) + floor
    return value / lr


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: OptimizerConfig,
    *,
    total_steps: int,
    steps_per_epoch: float,
) -> torch.optim.lr_scheduler.LRScheduler:
    """Return the LR scheduler named by ``cfg.lr_schedule``; call ``.step()`` once per optimizer step.

    Parameters
    ----------
    total_steps : int
        Optimizer steps in the run (``run.iterations``); sets the one-cycle length.
    steps_per_epoch : float
        ``dataset_size / minibatch_size``; converts the warm-up/decay epochs to steps.
    """
    if cfg.lr_schedule == "flat":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if cfg.lr_schedule == "one_cycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.learning_rate, total_steps=max(total_steps, 2), cycle_momentum=cfg.name == "sgd"
        )
    if cfg.lr_schedule == "warmup_decay":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_decay_factor(step, cfg, steps_per_epoch))
    raise ConfigError(
        f"mode.optimizer.lr_schedule: {cfg.lr_schedule!r} is unknown\nAvailable: 'flat', 'one_cycle', 'warmup_decay'"
    )
