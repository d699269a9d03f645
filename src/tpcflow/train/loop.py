"""The training loop: optimiser steps with gradient accumulation, validation, checkpoints, logs.

Source of the procedure: CosmicTagger ``src/utils/torch/trainer.py`` (master, 156c480), with
two deliberate differences (reference spec section 6): accumulated losses are divided by the
number of accumulation steps (so gradients are averaged, not summed), and ``weight_decay``
is applied when set.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from tpcflow.config import Config, experiment_differences, read_yaml, save_yaml
from tpcflow.errors import ConfigError, OutputError
from tpcflow.models.checkpoint import data_section, read_checkpoint, restore_model
from tpcflow.models.runtime import pick_device
from tpcflow.train import distributed
from tpcflow.train.checkpoint import CheckpointManager, get_rng_state, require_keys, set_rng_state
from tpcflow.train.logging import MetricsLogger
from tpcflow.train.network import (
    MeanAccumulator,
    TrainNetwork,
    batch_to_device,
    evaluate,
    minibatch_size,
    takes_voxels,
)
from tpcflow.train.optim import build_optimizer, build_scheduler
from tpcflow.train.resolve import make_run_directory, make_source, resolve_network, run_directory

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
    best : dict
        ``{"metric", "value", "iteration", "stale"}`` of the best validation so far (``mode.best_metric``;
        ``stale``: validations since), empty before the first validation.
    best_checkpoint : Path or None
        ``checkpoints/best.pt``, the network at that validation.
    stopped_early : bool
        True when ``mode.early_stopping`` ended the run.
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
    best: dict = field(default_factory=dict)
    best_checkpoint: Path | None = None
    stopped_early: bool = False
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


@dataclass
class _Run:
    """One training run's objects, built in a fixed order (the RNG draws depend on it)."""

    cfg: Config
    info: distributed.DistInfo
    netcfg: object
    net: TrainNetwork
    source: object
    aux: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: object
    manager: CheckpointManager
    best: dict = field(default_factory=dict)  # the best validation so far, saved in every checkpoint


def _build(cfg: Config, info: distributed.DistInfo, echo) -> _Run:
    """Seed, open the data sources, build the network, write config.yaml, build the optimizer."""
    if cfg.run.num_threads:
        torch.set_num_threads(cfg.run.num_threads)
    _seed_all(cfg.run.seed)
    netcfg = resolve_network(cfg)
    make_run_directory(cfg)
    sparse = takes_voxels(cfg, netcfg, info.world_size)  # the sparse network takes voxels from the loader
    source = make_source(cfg, "train", rank=info.rank, world_size=info.world_size, sparse=sparse)
    aux = (make_source(cfg, "aux", rank=info.rank, world_size=info.world_size, sparse=sparse)
           if cfg.run.aux_iterations else None)
    net = TrainNetwork(cfg, netcfg, info.device, source.shape)
    run_dir = run_directory(cfg)
    resolved = net.resolved_dict()
    echo("-- CONFIG --\n" + yaml.safe_dump(resolved, sort_keys=False).rstrip())
    echo(net.describe())
    ocfg = cfg.mode.optimizer
    optimizer = build_optimizer(net.model.parameters(), ocfg)
    steps_per_epoch = len(source) / ocfg.gradient_accumulation  # len(source) counts minibatches, not images
    scheduler = build_scheduler(optimizer, ocfg, total_steps=cfg.run.iterations, steps_per_epoch=steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda") if net.needs_scaler else None
    manager = CheckpointManager(run_dir / "checkpoints", cfg.mode.keep_checkpoints)
    return _Run(cfg, info, netcfg, net, source, aux, optimizer, scheduler, scaler, manager)


def _check_same_experiment(run: _Run) -> None:
    """Refuse to resume a run directory that holds another experiment (its config.yaml differs).

    Raises
    ------
    ConfigError
        Listing the differing keys and the two ways out: the same settings, or a new ``run.id``.
    """
    saved_path = run_directory(run.cfg) / "config.yaml"
    if not saved_path.is_file():
        return
    diffs = experiment_differences(read_yaml(saved_path), run.net.resolved_dict())
    if not diffs:
        return
    shown = "\n".join(f"  {k}: {a!r} in the saved run, {b!r} now" for k, a, b in diffs[:12])
    more = f"\n  ... and {len(diffs) - 12} more" if len(diffs) > 12 else ""
    cid = run.cfg.run.id
    raise ConfigError(
        f"run.id={cid} already holds a run with other settings ({run.manager.latest()}):\n{shown}{more}\n"
        f"Either resume it: run with the settings of {saved_path} (only run.iterations, logging and checkpoint "
        f"intervals may change), or start a new experiment: run.id={cid}-2 (any new name). "
        f"run.resume=false starts over in this directory and deletes its checkpoints."
    )


def _resume(run: _Run, echo) -> int:
    """Restore the newest checkpoint's full training state; return the iteration to start at.

    With ``run.resume=false`` the run starts over: the directory's earlier checkpoints are
    deleted first, so that none of them is taken later for this run's newest.
    """
    if not run.cfg.run.resume:
        old = run.manager.list()
        if old and run.info.is_main:
            echo(f"run.resume=false: deleting the {len(old)} checkpoint(s) of the earlier run in "
                 f"{run.manager.directory}")
            for path in old:
                path.unlink(missing_ok=True)
        return 0
    if run.manager.latest() is None:
        return 0
    _check_same_experiment(run)
    ckpt = run.manager.load_latest(run.netcfg, map_location=run.info.device)
    if ckpt is None:
        return 0
    path = run.manager.latest()
    require_keys(ckpt, ("optimizer", "scheduler", "rng", "loader", "iteration"), path)
    restore_model(run.net.model, run.netcfg, ckpt, file_path=path)
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    if run.scaler is not None and ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])
    run.source.load_state_dict(ckpt["loader"])
    if run.aux is not None and ckpt.get("aux_loader"):
        run.aux.load_state_dict(ckpt["aux_loader"])
    set_rng_state(ckpt["rng"])
    run.best = dict(ckpt.get("best") or {})
    start = int(ckpt["iteration"])
    echo(f"resumed from {path} at iteration {start}")
    return start


def _warm_start(run: _Run, echo) -> None:
    """Initial weights of a new run from ``mode.weights_location`` (the optimizer starts afresh).

    A dense ``2D`` checkpoint starts the ``sparse`` network (same parameters) and the other way
    round; every other difference of the network configuration is refused.

    Raises
    ------
    ConfigError
        Not a checkpoint, or one of another network configuration.
    """
    path = Path(run.cfg.mode.weights_location)
    ckpt = read_checkpoint(path, map_location=run.info.device)
    restore_model(run.net.model, run.netcfg, ckpt, file_path=path, warm_start=True)
    saved = ckpt.get("network", {}).get("conv_mode", "?")
    echo(f"initial weights from {path} (network.conv_mode={saved} checkpoint, trained here as "
         f"{run.netcfg.conv_mode})")


def _step(run: _Run) -> tuple[dict, float, int]:
    """One optimizer step over ``gradient_accumulation`` minibatches: (metrics, lr, images seen)."""
    net, info, accum = run.net, run.info, run.cfg.mode.optimizer.gradient_accumulation
    net.model.train()
    run.optimizer.zero_grad(set_to_none=True)
    acc = MeanAccumulator()
    images = 0
    for micro in range(accum):
        x, y = batch_to_device(next(run.source), info.device, run.cfg.run.channels_last)
        sync = micro == accum - 1 or not info.enabled
        with contextlib.nullcontext() if sync else net.forward_model.no_sync():
            loss, metrics = net.step(x, y)
            scaled = loss / accum
            (run.scaler.scale(scaled) if run.scaler is not None else scaled).backward()
        acc.add({"loss": float(loss.detach()), **metrics})
        images += minibatch_size(x) * info.world_size
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    lr = run.optimizer.param_groups[0]["lr"]
    run.scheduler.step()
    return distributed.all_reduce_mean(acc.mean(), info), lr, images


def _training_state(run: _Run) -> dict:
    """The checkpoint's extra entries that make a resume exact."""
    return {
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler is not None else {},
        "rng": get_rng_state(),
        "loader": run.source.state_dict(),
        "aux_loader": run.aux.state_dict() if run.aux is not None else {},
        "data": data_section(run.cfg.data.downsample, run.source.shape),
        "best": dict(run.best),
    }


def _track_best(run: _Run, result: TrainResult, iteration: int, echo) -> bool:
    """After a validation: keep ``best.pt`` when ``mode.best_metric`` improved; True when the run should stop.

    ``loss`` (and names ending in ``loss``) improve downwards, every other metric upwards; a NaN
    value (a metric undefined for the validation minibatch) is not counted either way.

    Raises
    ------
    ConfigError
        ``mode.best_metric`` is not one of the validation metrics (listing them).
    """
    metric = run.cfg.mode.best_metric
    if not metric:
        return False
    if metric not in result.validation:
        raise ConfigError(f"mode.best_metric={metric!r} is not a validation metric; choose one of "
                          f"{sorted(result.validation)[:12]}... (or mode.best_metric= for none)")
    value = float(result.validation[metric])
    if math.isnan(value):
        return False
    lower = metric.endswith("loss")
    old = run.best.get("value") if run.best.get("metric") == metric else None
    if old is None or (value < old if lower else value > old):
        run.best = {"metric": metric, "value": value, "iteration": iteration, "stale": 0}
        if run.info.is_main:
            extra = {"best": dict(run.best), "data": data_section(run.cfg.data.downsample, run.source.shape)}
            result.best_checkpoint = run.manager.save_best(iteration, run.net.model, run.netcfg, extra)
    else:
        run.best["stale"] = int(run.best.get("stale", 0)) + 1
    result.best = dict(run.best)
    patience = run.cfg.mode.early_stopping
    if patience and run.best["stale"] >= patience:
        echo(f"early stopping at iteration {iteration}: {metric} has not improved on {run.best['value']:.4g} "
             f"(iteration {run.best['iteration']}) for {patience} validations; best network: "
             f"{run.manager.best_path}")
        return True
    return False


def _save_checkpoint(run: _Run, result: TrainResult, iteration: int, state: dict, *, last: bool, echo) -> None:
    """Write a checkpoint; when the disk refuses, train on (the state stays in memory) and retry at the next one.

    Raises
    ------
    OutputError
        When the run's last checkpoint cannot be written, naming the last good one.
    """
    try:
        result.checkpoint = run.manager.save(iteration, run.net.model, run.netcfg, state)
    except (OSError, RuntimeError) as err:  # torch.save reports a failed write as a RuntimeError
        good = result.checkpoint or run.manager.latest()
        msg = (f"the checkpoint of iteration {iteration} could not be written to {run.manager.directory}: "
               f"{getattr(err, 'strerror', None) or err}; the last good checkpoint is {good or 'none'}")
        if last:
            raise OutputError(msg) from None
        echo(f"warning: {msg}; training goes on and the next checkpoint tries again")


def _train(cfg: Config, info: distributed.DistInfo, echo, stop_at=None) -> TrainResult:
    run = _build(cfg, info, echo)
    start = _resume(run, echo)
    if start == 0 and cfg.mode.weights_location:
        _warm_start(run, echo)
    if info.is_main:  # written once the run is known to be new or the same experiment resumed
        save_yaml(cfg, run_directory(cfg) / "config.yaml", run.net.resolved_dict()["network"])
    net = run.net
    net.forward_model = distributed.wrap_model(net.model, info)
    net.compile()
    result = TrainResult(run_dir=run_directory(cfg), n_parameters=net.n_parameters, start_iteration=start,
                         model=net.model, network_config=run.netcfg, is_main=info.is_main)
    result.best = dict(run.best)
    result.best_checkpoint = run.manager.best_path if run.best and run.manager.best_path.is_file() else None
    total = cfg.run.iterations
    logger = MetricsLogger(result.run_dir, enabled=info.is_main, progress_total=total if cfg.run.progress else None,
                           initial=start)
    images, t0 = 0, time.perf_counter()
    try:
        for it in range(start, total):
            metrics, lr, seen = _step(run)
            images += seen
            result.losses.append(metrics["loss"])
            result.metrics = metrics
            result.images_per_second = images / max(time.perf_counter() - t0, 1e-9)
            if (it + 1) % cfg.mode.logging_iteration == 0 or it + 1 == total:
                logger.log(it + 1, "train", {**metrics, "lr": lr, "img_per_s": result.images_per_second})
            logger.progress(1, loss=metrics["loss"], img_s=result.images_per_second)
            stop = False
            if run.aux is not None and (it + 1) % cfg.run.aux_iterations == 0:
                result.validation = distributed.all_reduce_mean(evaluate(net, run.aux, max_batches=1), info)
                logger.log(it + 1, "val", result.validation)
                stop = result.stopped_early = _track_best(run, result, it + 1, echo)
            if (it + 1) % cfg.mode.checkpoint_iteration == 0 or it + 1 == total or stop:
                state = _training_state(run)
                if info.is_main:
                    _save_checkpoint(run, result, it + 1, state, last=it + 1 == total or stop, echo=echo)
            if stop or (stop_at is not None and it + 1 >= stop_at):
                break
    finally:
        logger.close()
        run.source.close()
        if run.aux is not None:
            run.aux.close()
    if start >= total:
        echo(f"the run is already at iteration {start} >= run.iterations={total}: nothing to train (raise run.iterations)")
    if result.losses:
        echo(
            f"trained iterations {start}..{start + len(result.losses)}: loss {result.losses[-1]:.4g}, "
            f"{result.images_per_second:.2f} img/s on {info.device} x{info.world_size}"
        )
    if result.best_checkpoint is not None:
        echo(f"best validation {result.best['metric']} {result.best['value']:.4g} at iteration "
             f"{result.best['iteration']}: {result.best_checkpoint}")
    return result
