"""The training loop: optimiser steps with gradient accumulation, validation, checkpoints, logs.

Source of the procedure: CosmicTagger ``src/utils/torch/trainer.py`` (master, 156c480), with
two deliberate differences (reference spec section 6): accumulated losses are divided by the
number of accumulation steps (so gradients are averaged, not summed), and ``weight_decay``
is applied when set.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from tpcflow.config import Config, save_yaml
from tpcflow.models.checkpoint import restore_model
from tpcflow.models.runtime import pick_device
from tpcflow.train import distributed
from tpcflow.train.checkpoint import CheckpointManager, get_rng_state, require_keys, set_rng_state
from tpcflow.train.logging import MetricsLogger
from tpcflow.train.optim import build_optimizer, build_scheduler
from tpcflow.train.resolve import make_source, resolve_network, run_directory
from tpcflow.train.network import MeanAccumulator, TrainNetwork, batch_to_device, evaluate

__all__ = ["TrainResult", "train"]


@dataclass
class TrainResult:
    """What a training run returns.

    Attributes
    ----------
    run_dir : Path
    losses : list of float
        Training loss of every iteration run by this call (all-reduced mean over ranks).
    metrics : dict
        Training metrics of the last iteration.
    validation : dict
        Metrics of the last validation (empty if none ran).
    checkpoint : Path or None
        The newest checkpoint written.
    n_parameters : int
    start_iteration : int
        0, or the iteration resumed from.
    images_per_second : float
    model : torch.nn.Module
        The trained network (unwrapped from DDP / torch.compile).
    network_config : NetworkConfig
    is_main : bool
        True on rank 0 (the rank that writes files).
    """

    run_dir: Path
    losses: list[float] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)
    checkpoint: Path | None = None
    n_parameters: int = 0
    start_iteration: int = 0
    images_per_second: float = 0.0
    model: object = None
    network_config: object = None
    is_main: bool = True


def _seed_all(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(cfg: Config, *, echo=print, stop_at: int | None = None) -> TrainResult:
    """Train the network of ``cfg`` for ``run.iterations`` optimizer steps.

    Resumes exactly from the newest checkpoint in ``<output_dir>/<id>/checkpoints`` when
    ``run.resume`` is true (model, optimizer, scheduler, scaler, RNG states and data position).
    ``stop_at`` stops after that iteration as if the run were interrupted (for tests).

    Raises
    ------
    ConfigError
        Bad configuration: missing product, shape not divisible by ``2**network_depth``,
        checkpoint of another network configuration, ...
    """
    device = pick_device(cfg.run.compute_mode, setting="run.compute_mode")
    info = distributed.setup(device)
    try:
        return _train(cfg, info, echo if info.is_main else (lambda *a, **k: None), stop_at)
    finally:
        distributed.cleanup(info)


def _train(cfg: Config, info: distributed.DistInfo, echo, stop_at=None) -> TrainResult:
    if cfg.run.num_threads:
        torch.set_num_threads(cfg.run.num_threads)
    _seed_all(cfg.run.seed)
    netcfg = resolve_network(cfg)
    source = make_source(cfg, "train", rank=info.rank, world_size=info.world_size)
    aux = make_source(cfg, "aux", rank=info.rank, world_size=info.world_size) if cfg.run.aux_iterations else None
    runner = TrainNetwork(cfg, netcfg, info.device, source.shape)
    run_dir = run_directory(cfg)
    resolved = runner.resolved_dict()
    echo("-- CONFIG --\n" + yaml.safe_dump(resolved, sort_keys=False).rstrip())
    echo(runner.describe())
    if info.is_main:
        save_yaml(cfg, run_dir / "config.yaml", resolved["network"])

    ocfg = cfg.mode.optimizer
    optimizer = build_optimizer(runner.model.parameters(), ocfg)
    steps_per_epoch = len(source) / cfg.run.minibatch_size / ocfg.gradient_accumulation
    scheduler = build_scheduler(optimizer, ocfg, total_steps=cfg.run.iterations, steps_per_epoch=steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda") if runner.needs_scaler else None

    manager = CheckpointManager(run_dir / "checkpoints", cfg.mode.keep_checkpoints)
    start = 0
    if cfg.run.resume:
        ckpt = manager.load_latest(netcfg, map_location=info.device)
        if ckpt is not None:
            require_keys(ckpt, ("optimizer", "scheduler", "rng", "loader", "iteration"), manager.latest())
            restore_model(runner.model, netcfg, ckpt, file_path=manager.latest())
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            if scaler is not None and ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            source.load_state_dict(ckpt["loader"])
            if aux is not None and ckpt.get("aux_loader"):
                aux.load_state_dict(ckpt["aux_loader"])
            set_rng_state(ckpt["rng"])
            start = int(ckpt["iteration"])
            echo(f"resumed from {manager.latest()} at iteration {start}")

    runner.forward_model = distributed.wrap_model(runner.model, info)
    runner.compile()
    result = TrainResult(
        run_dir=run_dir,
        n_parameters=runner.n_parameters,
        start_iteration=start,
        model=runner.model,
        network_config=netcfg,
        is_main=info.is_main,
    )
    accum = ocfg.gradient_accumulation
    total = cfg.run.iterations
    logger = MetricsLogger(
        run_dir, enabled=info.is_main, progress_total=total if cfg.run.progress else None, initial=start
    )
    images, t0 = 0, time.perf_counter()
    try:
        for it in range(start, total):
            runner.model.train()
            optimizer.zero_grad(set_to_none=True)
            acc = MeanAccumulator()
            for micro in range(accum):
                batch = next(source)
                x, y = batch_to_device(batch, info.device, cfg.run.channels_last)
                sync = micro == accum - 1 or not info.enabled
                ctx = contextlib.nullcontext() if sync else runner.forward_model.no_sync()
                with ctx:
                    logits = runner.forward(x)
                    loss = runner.loss(logits, y)
                    scaled = loss / accum
                    (scaler.scale(scaled) if scaler is not None else scaled).backward()
                m = {"loss": float(loss.detach()), **runner.metrics(logits.detach(), y)}
                acc.add(m)
                images += x.shape[0] * info.world_size
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            metrics = distributed.all_reduce_mean(acc.mean(), info)
            elapsed = max(time.perf_counter() - t0, 1e-9)
            result.losses.append(metrics["loss"])
            result.metrics = metrics
            result.images_per_second = images / elapsed
            if (it + 1) % cfg.mode.logging_iteration == 0 or it + 1 == total:
                logger.log(it + 1, "train", {**metrics, "lr": lr, "img_per_s": result.images_per_second})
            logger.progress(1, loss=metrics["loss"], img_s=result.images_per_second)
            if aux is not None and (it + 1) % cfg.run.aux_iterations == 0:
                val = distributed.all_reduce_mean(evaluate(runner, aux, max_batches=1), info)
                result.validation = val
                logger.log(it + 1, "val", val)
            if (it + 1) % cfg.mode.checkpoint_iteration == 0 or it + 1 == total:
                state = {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else {},
                    "rng": get_rng_state(),
                    "loader": source.state_dict(),
                    "aux_loader": aux.state_dict() if aux is not None else {},
                }
                if info.is_main:
                    result.checkpoint = manager.save(it + 1, runner.model, netcfg, state)
            if stop_at is not None and it + 1 >= stop_at:
                break
    finally:
        logger.close()
        source.close()
        if aux is not None:
            aux.close()
    if start >= total:
        echo(f"the run is already at iteration {start} >= run.iterations={total}: nothing to train (raise run.iterations)")
    if result.losses:
        echo(
            f"trained iterations {start}..{total}: loss {result.losses[-1]:.4g}, "
            f"{result.images_per_second:.2f} img/s on {info.device} x{info.world_size}"
        )
    return result
