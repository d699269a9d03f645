"""Cosmic-tagger quality under a fixed CPU budget: train on synthetic SBND events, measure on held-out and real events.

Run: ``python benchmarks/bench_quality.py`` (45 minutes of training by default) or ``--minutes 1``.

The network (default: ``demo``, the demo's 508k-parameter dense UResNet, at downsample 4, 80x128 per
plane: on 2 CPU cores it reached the best quality per minute of the recipes in ``docs/quality.md``; the
sparse ``a21`` at 320x512 learned about 3x slower per minute) trains through
``tpcflow train`` (``tpcflow.train.loop.train``) on ``--events`` synthetic events, in segments that
resume exactly from the previous one, until ``--minutes`` have passed (the generation of the events
included; the last segment is shortened to end within the budget).  After each segment the network is
measured on the first ``--curve-events`` of the ``--test-events`` held-out synthetic events (another
seed): the learning curve goes to ``<out>/learning_curve.csv`` and ``.png``.  At the end the network is
measured on every held-out event and on the real ``cosmic_tagging_light.h5`` (pooled to the same
resolution; never trained on).

Then the operating point (:mod:`tpcflow.train.calibrate`): the background-logit offset that meets the
targets with the most margin is chosen on ``--calibration-events`` validation events (a third seed;
the sweep goes to ``<out>/calibration.csv``), and the calibrated network is measured on the same
held-out and real events.  ``quality_*`` lines are the argmax of the trained network,
``quality_calibrated_*`` lines the calibrated one.  ``quality_train_images_per_second`` is the training speed
through ``tpcflow train`` (each segment's start included) against the network-only step (forward, loss,
backward, optimizer step on one in-memory minibatch) of the same network in the same process.

``BENCH`` lines give each metric against CosmicTagger's README targets (Non_Bkg_Accuracy 0.95,
Cosmic_IoU 0.90, Neutrino_IoU 0.75 for this issue's bar; mIoU against their mean), so that a ratio
>= 1 means the target is met; the untrained network's values of the same run are printed beside them.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

TARGETS = {"Non_Bkg_Accuracy": 0.95, "Cosmic_IoU": 0.90, "Neutrino_IoU": 0.75, "mIoU": 0.825}


def _metrics(cfg, model, files, downsample: int, max_events: int | None = None) -> dict:
    """Mean metrics of ``model`` (None: the untrained network) over the entries of ``files`` (the first
    ``max_events``; None: every one)."""
    import dataclasses

    from tpcflow.models.runtime import pick_device
    from tpcflow.train.data import FileSource
    from tpcflow.train.network import TrainNetwork, evaluate, takes_voxels
    from tpcflow.train.resolve import resolve_network

    netcfg = resolve_network(cfg)
    data = dataclasses.replace(cfg.data, file=str(files[0]), downsample=downsample)
    source = FileSource(files, data, 1, cycle=False, shuffle=False, sparse=takes_voxels(cfg, netcfg))
    try:
        net = TrainNetwork(cfg, netcfg, pick_device(cfg.run.compute_mode), source.shape)
        if model is not None:
            net.use_model(model)
        return evaluate(net, source, max_batches=max_events)
    finally:
        source.close()


def _write_curve(out: Path, rows: list[dict]) -> None:
    from tpcflow.atomic import atomic_path, write_csv

    write_csv(out / "learning_curve.csv", rows)
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    minutes = [r["minutes"] for r in rows]
    for name in ("Non_Bkg_Accuracy", "Cosmic_IoU", "Neutrino_IoU"):
        ax.plot(minutes, [r[name] for r in rows], marker="o", label=f"held-out {name}")
        ax.axhline(TARGETS[name], ls=":", lw=0.8, color=ax.lines[-1].get_color())
    ax.set_xlabel("training time [min]")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("cosmic tagger on held-out synthetic events (dotted: targets)")
    with atomic_path(out / "learning_curve.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def run(args) -> dict:
    import torch

    from tpcflow.config import load_config
    from tpcflow.sim.sbnd import generate_file
    from tpcflow.train.loop import train
    from tpcflow.workflows.demo import find_real_file

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.network == "demo":
        from tpcflow.workflows.demo import DEMO_NETWORK

        network = ["network=uresnet", *DEMO_NETWORK]
    else:
        network = [f"network={args.network}"]
    schedule = [f"mode.optimizer.lr_schedule={args.lr_schedule}"]
    if args.lr_schedule == "warmup_decay":
        schedule += ["mode.optimizer.warmup_epochs=1", f"mode.optimizer.decay_start_epoch={args.decay_start}",
                     f"mode.optimizer.decay_rate={args.decay_rate}",
                     f"mode.optimizer.lr_floor={args.learning_rate / 1000:g}"]
    layout = ["run.channels_last=true"] if args.conv_mode == "2D" else []  # as the demo
    base = [*network, f"network.conv_mode={args.conv_mode}", *layout, *schedule, "data.synthetic=true",
            f"data.downsample={args.downsample}", f"data.synthetic_events={args.events}",
            f"data.synthetic_seed={args.seed}", f"run.minibatch_size={args.minibatch}", "run.aux_iterations=0",
            "run.progress=false", f"run.output_dir={out}", "run.id=quality", "mode.keep_checkpoints=1",
            f"mode.optimizer.learning_rate={args.learning_rate}",
            f"mode.optimizer.loss_balance_scheme={args.scheme}", f"run.seed={args.seed}", *args.set]
    heldout = out / f"heldout-n{args.test_events}-ds{args.downsample}.h5"
    if not heldout.is_file():
        generate_file(heldout, args.test_events, args.seed + 7919, downsample=args.downsample)
    cfg = load_config([*base, "run.iterations=1"])
    torch.manual_seed(args.seed)
    untrained = _metrics(cfg, None, [heldout], 0)
    budget, t0, done, rows, result, seg, train_s = args.minutes * 60.0, time.perf_counter(), 0, [], None, 10, 0.0
    step_s, curve_events = None, min(args.curve_events, args.test_events)
    while (left := budget - (time.perf_counter() - t0)) > 0:
        n = seg if step_s is None else max(1, min(seg, int(left / step_s)))  # the last one ends within the budget
        cfg = load_config([*base, f"run.iterations={done + n}", f"mode.checkpoint_iteration={done + n}"])
        t_seg = time.perf_counter()
        result = train(cfg, echo=lambda *_a, **_k: None)
        train_s += time.perf_counter() - t_seg
        step_s = (time.perf_counter() - t_seg) / max(len(result.losses), 1)
        done += len(result.losses)
        m = _metrics(cfg, result.model, [heldout], 0, curve_events)
        rows.append({"iteration": done, "minutes": round((time.perf_counter() - t0) / 60, 3),
                     "train_loss": result.losses[-1],
                     **{k: m.get(f"Average/{k}", math.nan) for k in
                        ("Non_Bkg_Accuracy", "Cosmic_IoU", "Neutrino_IoU", "mIoU", "Cosmic_Precision",
                         "Cosmic_Recall", "Neutrino_Precision", "Neutrino_Recall")}})
        print(f"# {rows[-1]}", flush=True)
        if len(rows) == 2:  # about 10 points on the curve, from the speed of the second segment (the first
            # one also generated the training events)
            seg = max(5, min(int(budget / 10 / max(step_s, 1e-3)), 5000))
    _write_curve(out, rows)
    final = {"synthetic": _metrics(cfg, result.model, [heldout], 0)}
    real = Path(args.real) if args.real else find_real_file()
    if real is not None and real.is_file():
        final["real"] = _metrics(cfg, result.model, [real], args.downsample)
        untrained_real = _metrics(cfg, None, [real], args.downsample)
    images_s = done * args.minibatch / max(train_s, 1e-9)
    calibrated = _calibrate(args, cfg, result.model, out, heldout, real) if args.calibration_events else {}
    print(f"# {args.network} ({args.conv_mode}), downsample {args.downsample}, {done} iterations of "
          f"{args.minibatch} images in a {args.minutes:g} min budget: {images_s:.2f} img/s while training (each "
          f"segment's start included); curve in {out}/learning_curve.png", flush=True)
    for where, metrics in final.items():
        before = untrained if where == "synthetic" else untrained_real
        for name, target in TARGETS.items():
            value = metrics.get(f"Average/{name}", math.nan)
            cal = calibrated.get(where, {}).get(f"Average/{name}")
            print(f"# {where} {name}: untrained {before.get(f'Average/{name}', math.nan):.4f} -> {value:.4f}"
                  + ("" if cal is None else f" (calibrated {cal:.4f})"))
            print(f"BENCH quality_{where}_{name} {value:.4g} fraction baseline={target:.4g} "
                  f"ratio={value / target:.2f}", flush=True)
            if cal is not None:
                print(f"BENCH quality_calibrated_{where}_{name} {cal:.4g} fraction baseline={target:.4g} "
                      f"ratio={cal / target:.2f}", flush=True)
    network_s = _network_step_rate(cfg, result.model, heldout)
    print(f"# training speed: {images_s:.2f} img/s through tpcflow train, {network_s:.2f} img/s for the network-only "
          "step (forward, loss, backward, optimizer step) on one in-memory minibatch of held-out events")
    print(f"BENCH quality_train_images_per_second {images_s:.4g} img/s baseline={network_s:.4g} "
          f"ratio={images_s / network_s:.2f}", flush=True)
    return {"untrained": untrained, "final": final, "calibrated": calibrated, "rows": rows, "iterations": done,
            "images_per_second": images_s, "network_images_per_second": network_s}


def _network_step_rate(cfg, model, heldout: Path, steps: int = 20, warmup: int = 3) -> float:
    """Images/s of the network-only training step of a copy of ``model``, the baseline of the training speed.

    Forward, the run's loss, backward and a fresh optimizer's step, on one minibatch of ``heldout`` in memory
    (no loader, metrics, logging or checkpoints), after ``warmup`` steps.
    """
    import copy
    import dataclasses

    from tpcflow.models.runtime import pick_device
    from tpcflow.train.data import FileSource
    from tpcflow.train.network import TrainNetwork, batch_to_device, minibatch_size
    from tpcflow.train.optim import build_optimizer
    from tpcflow.train.resolve import resolve_network

    data = dataclasses.replace(cfg.data, file=str(heldout), downsample=0)
    source = FileSource([heldout], data, cfg.run.minibatch_size, cycle=False, shuffle=False, sparse=False)
    try:
        runner = TrainNetwork(cfg, resolve_network(cfg), pick_device(cfg.run.compute_mode), source.shape)
        batch = next(iter(source))
    finally:
        source.close()
    runner.use_model(copy.deepcopy(model))
    runner.model.train()
    x, y = batch_to_device(batch, runner.device, cfg.run.channels_last)
    optimizer = build_optimizer(runner.model.parameters(), cfg.mode.optimizer)
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        runner.loss(runner.forward(x), y).backward()
        optimizer.step()
    return steps * minibatch_size(x) / (time.perf_counter() - t0)


def _calibrate(args, cfg, model, out: Path, heldout: Path, real: Path | None) -> dict:
    """Choose the background offset on validation events, then measure the calibrated copy of ``model``.

    Returns ``{"offset": float, "synthetic": metrics, "real": metrics}`` (``real`` when the file is there).
    """
    import copy
    import dataclasses

    from tpcflow.models.runtime import pick_device
    from tpcflow.sim.sbnd import generate_file
    from tpcflow.train.calibrate import apply_background_offset, choose_offset, sweep_background_offset, write_sweep
    from tpcflow.train.data import FileSource
    from tpcflow.train.network import TrainNetwork
    from tpcflow.train.resolve import resolve_network

    t0 = time.perf_counter()
    validation = out / f"validation-n{args.calibration_events}-ds{args.downsample}.h5"
    if not validation.is_file():
        generate_file(validation, args.calibration_events, args.seed + 104729, downsample=args.downsample)
    data = dataclasses.replace(cfg.data, file=str(validation), downsample=0)
    source = FileSource([validation], data, args.minibatch, cycle=False, shuffle=False, sparse=False)
    try:
        runner = TrainNetwork(cfg, resolve_network(cfg), pick_device(cfg.run.compute_mode), source.shape)
        runner.use_model(model)
        sweep = sweep_background_offset(runner, source)
    finally:
        source.close()
    targets = {f"Average/{k}": v for k, v in TARGETS.items() if k != "mIoU"}  # mIoU is the IoUs' mean
    best = choose_offset(sweep, targets)
    write_sweep(out, [{"offset": r["offset"], **{k: r[k] for k in r if k.startswith("Average/")}} for r in sweep],
                best["offset"], targets)
    calibrated = copy.deepcopy(model)
    apply_background_offset(calibrated, best["offset"])
    result = {"offset": best["offset"], "synthetic": _metrics(cfg, calibrated, [heldout], 0)}
    if real is not None and real.is_file():
        result["real"] = _metrics(cfg, calibrated, [real], args.downsample)
    print(f"# calibration on {args.calibration_events} validation events: background offset {best['offset']:+.2f} "
          f"(validation " + ", ".join(f"{k.split('/')[1]} {best[k]:.4f}" for k in targets) +
          f"); {time.perf_counter() - t0:.0f} s; sweep in {out}/calibration.csv and .png", flush=True)
    return result


def compare_schemes(args) -> dict:
    """Run :func:`run` once per loss balance scheme of ``args.schemes`` on the same budget and events.

    Each scheme trains from the same seed in ``<out>/<scheme>``; a table of the final held-out and real
    metrics follows, with one ``BENCH quality_scheme_<scheme>_<where>_<metric>`` line each (baseline: the
    target, as in :func:`run`).
    """
    import copy

    results = {}
    for scheme in args.schemes.split(","):
        a = copy.copy(args)
        a.scheme, a.out = scheme, str(Path(args.out) / scheme)
        print(f"# --- loss balance scheme {scheme!r}", flush=True)
        results[scheme] = run(a)
    print(f"# {'scheme':8s} {'iterations':>10s} " + " ".join(f"{w[:5]} {n:>16s}" for w in ("synthetic", "real")
                                                             for n in TARGETS))
    for scheme, r in results.items():
        cells = [f"{r['final'].get(w, {}).get(f'Average/{n}', math.nan):22.4f}" for w in ("synthetic", "real")
                 for n in TARGETS]
        print(f"# {scheme:8s} {r['iterations']:10d} " + " ".join(cells))
        for w in ("synthetic", "real"):
            for name, target in TARGETS.items():
                value = r["final"].get(w, {}).get(f"Average/{name}", math.nan)
                print(f"BENCH quality_scheme_{scheme}_{w}_{name} {value:.4g} fraction baseline={target:.4g} "
                      f"ratio={value / target:.2f}", flush=True)
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--minutes", type=float, default=45.0, help="training budget [min]")
    parser.add_argument("--network", default="demo", help="network preset (uresnet, a21, ...) or demo: the demo's")
    parser.add_argument("--conv-mode", default="2D", help="2D or sparse")
    parser.add_argument("--downsample", type=int, default=4, help="images pooled by 2**downsample per axis")
    parser.add_argument("--events", type=int, default=4096,
                        help="synthetic training events (generated inside the budget, about 3 minutes on 2 cores)")
    parser.add_argument("--test-events", type=int, default=128, help="held-out synthetic events (the final metrics)")
    parser.add_argument("--curve-events", type=int, default=32,
                        help="the first this many held-out events measure the learning curve (inside the budget)")
    parser.add_argument("--minibatch", type=int, default=8, help="images per step")
    parser.add_argument("--learning-rate", type=float, default=4e-3)
    parser.add_argument("--lr-schedule", default="warmup_decay", help="flat or warmup_decay (one_cycle needs the "
                        "length in advance, which a time budget does not know)")
    parser.add_argument("--decay-start", type=float, default=4.5,
                        help="warmup_decay: epochs before the decay (about half of the ~9 that 45 minutes take on 2 cores)")
    parser.add_argument("--decay-rate", type=float, default=0.45, help="warmup_decay: per epoch, exp(-rate * epochs)")
    parser.add_argument("--scheme", default="focal", help="loss balance scheme: none, light, even, focal")
    parser.add_argument("--schemes", default=None, metavar="A,B,...",
                        help="compare these loss balance schemes, each with the whole budget (e.g. none,light,even,focal)")
    parser.add_argument("--calibration-events", type=int, default=64,
                        help="validation events for the background offset (tpcflow.train.calibrate); 0: none")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real", default=None, help="real events file (default: cosmic_tagging_light.h5 if found)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="another tpcflow override")
    parser.add_argument("--out", default="bench_quality_out", help="output folder")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    compare_schemes(args) if args.schemes else run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
