"""``tpcflow demo``: synthetic events -> a small UResNet trained on CPU -> evaluation -> inference -> service.

This module imports torch only inside the stages (``tpcflow --help`` reads its defaults).
The stages are plain functions over a :class:`DemoState`, listed by :func:`demo_stages`, so a
test can run a tiny version and other layers can add a stage (for example one that serves the
trained model) by extending the list:

1. ``generate``: synthetic SBND events (:mod:`tpcflow.sim.sbnd`) at ``2**-downsample``
   resolution: the training set in memory, a held-out set in memory and as a larcv3 file;
2. ``train``: the small UResNet on CPU; the held-out metrics of the untrained network are
   measured first, for comparison;
3. ``evaluate``: CosmicTagger metrics on the held-out events;
4. ``inference``: predictions, per-event metrics and event displays for the held-out file,
   and for the real ``cosmic_tagging_light.h5`` when it is found ($TPCFLOW_DATA or
   ../shared/data relative to the working directory);
5. ``serve``: the trained network behind an MDP broker with a local worker on 127.0.0.1; the
   held-out file is segmented through it by ``submit`` and compared voxel by voxel with the
   direct inference of stage 4;
6. ``report``: the metrics table (printed and written to ``summary.json`` / ``metrics.txt``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tpcflow import atomic
from tpcflow.config import Config, load_config
from tpcflow.train.report import format_metrics

__all__ = ["DemoSettings", "DemoState", "check_settings", "demo_stages", "find_real_file", "run_demo",
           "schedule_overrides", "train_config"]

REAL_FILE = "larcv3/cosmic_tagging_light.h5"

#: the small network of the demo (CosmicTagger's UResNet topology, fewer filters and blocks; 508k parameters)
DEMO_NETWORK = (
    "network.n_initial_filters=8",
    "network.network_depth=4",
    "network.blocks_per_layer=1",
    "network.blocks_deepest_layer=2",
    "network.blocks_final=1",
    "network.bottleneck_deepest=64",
)


@dataclass(frozen=True)
class DemoSettings:
    """Knobs of the demo; the defaults take about 4 minutes on 2 CPU cores.

    The defaults are the best recipe of the 4-minute quality runs in ``docs/quality.md``: 80x128
    images per plane (downsample 4), the dense demo network, 450 steps of 8 images (about 15
    images/s on 2 cores) on 256 events (14 epochs: with 128 the network learned them and did worse on
    held-out events), a learning rate of 4e-3 that decays over the second half, focal loss.

    Attributes
    ----------
    out : Path
        Output directory (run directory ``<out>/run``, files, displays, summary).
    downsample : int
        Images of (1280 x 2048) / 2**downsample per plane.
    train_events, test_events : int
        Synthetic events for training and for the held-out evaluation.
    iterations, minibatch_size, learning_rate
        Training length (optimizer steps), images per step, (peak) learning rate.
    lr_schedule : str
        ``flat``, ``one_cycle`` or ``warmup_decay`` (``mode.optimizer.lr_schedule``); the demo's
        ``warmup_decay`` warms up over the first epoch, holds the learning rate to half of the run and
        then decays it exponentially to 1/8 of it by the end (:func:`schedule_overrides`).
    loss_scheme : str
        ``none``, ``light``, ``even`` or ``focal`` (``mode.optimizer.loss_balance_scheme``).
    network : tuple of str
        ``network.*`` overrides of the UResNet preset.
    extra : tuple of str
        Further ``key=value`` overrides of the training configuration.
    displays : int
        Event displays per inference.
    real_file : Path, "auto" or None
        The real larcv3 file for the last inference ("auto": search; None: skip).
    """

    out: Path = Path("demo_output")
    downsample: int = 4
    train_events: int = 256
    test_events: int = 16
    iterations: int = 450
    minibatch_size: int = 8
    learning_rate: float = 4e-3
    lr_schedule: str = "warmup_decay"
    loss_scheme: str = "focal"
    seed: int = 2024
    network: tuple[str, ...] = DEMO_NETWORK
    extra: tuple[str, ...] = ()
    displays: int = 3
    real_file: Path | str | None = "auto"
    progress: bool = True


@dataclass
class DemoState:
    """What the stages hand to each other."""

    settings: DemoSettings
    config: Config | None = None
    test_file: Path | None = None
    test_source: Callable | None = None  # () -> a fresh Source over test_file
    train_result: object = None
    metrics: dict[str, dict] = field(default_factory=dict)
    inference: dict[str, object] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    served_agreement: tuple[int, int] | None = None
    echo: Callable = print


def find_real_file() -> Path | None:
    """``$TPCFLOW_DATA/larcv3/cosmic_tagging_light.h5`` or ``../shared/data/...`` from the cwd."""
    roots = [Path(os.environ["TPCFLOW_DATA"])] if os.environ.get("TPCFLOW_DATA") else []
    roots.append(Path.cwd().parent / "shared" / "data")
    for root in roots:
        if (root / REAL_FILE).is_file():
            return root / REAL_FILE
    return None


def schedule_overrides(s: DemoSettings) -> list[str]:
    """The ``mode.optimizer.*`` schedule overrides of the demo, scaled to its length.

    ``warmup_decay`` (CosmicTagger's schedule, in epochs of ``train_events``): warm-up over the first
    epoch (at most a tenth of the run), flat to half of the run, then ``exp(-rate * epochs)`` with the
    rate that leaves exp(-2.1) ~ 1/8 of the learning rate at the end.
    """
    out = [f"mode.optimizer.lr_schedule={s.lr_schedule}"]
    if s.lr_schedule == "warmup_decay":
        epochs = max(s.iterations * s.minibatch_size / max(s.train_events, 1), 1e-3)
        out += [f"mode.optimizer.warmup_epochs={min(1.0, epochs / 10):.6g}",
                f"mode.optimizer.decay_start_epoch={epochs / 2:.6g}",
                f"mode.optimizer.decay_rate={2.1 / (epochs / 2):.6g}",
                f"mode.optimizer.lr_floor={s.learning_rate / 1000:.6g}"]
    return out


def train_config(s: DemoSettings) -> Config:
    """The training configuration of the demo."""

    overrides = [
        "run.id=run",
        f"run.output_dir={s.out}",
        f"run.iterations={s.iterations}",
        f"run.minibatch_size={s.minibatch_size}",
        "run.aux_iterations=0",
        "run.compute_mode=cpu",
        "run.channels_last=true",
        f"run.seed={s.seed}",
        f"run.progress={s.progress}",
        "run.resume=false",
        f"mode.checkpoint_iteration={max(s.iterations, 1)}",
        "mode.keep_checkpoints=1",
        f"mode.logging_iteration={max(1, s.iterations // 100)}",
        f"mode.optimizer.learning_rate={s.learning_rate}",
        *schedule_overrides(s),
        f"mode.optimizer.loss_balance_scheme={s.loss_scheme}",
        "data.synthetic=true",
        f"data.downsample={s.downsample}",
        f"data.synthetic_events={s.train_events}",
        f"data.synthetic_seed={s.seed}",
        *s.network,
        *s.extra,
    ]
    return load_config(overrides, mode="train")


def stage_generate(state: DemoState) -> None:
    """Generate the held-out events as a larcv3 file; the training set is made by ``train`` (data.synthetic)."""
    from tpcflow.sim.sbnd import generate_file
    from tpcflow.train.data import FileSource

    s = state.settings
    s.out.mkdir(parents=True, exist_ok=True)
    state.config = train_config(s)
    test_seed = s.seed + 7919
    state.test_file = generate_file(s.out / "synthetic_test.h5", s.test_events, test_seed, downsample=s.downsample)
    state.test_source = lambda: FileSource(
        [state.test_file], dataclasses.replace(state.config.data, file=str(state.test_file), downsample=0),
        min(state.config.run.minibatch_size, s.test_events), cycle=False, shuffle=False)
    probe = state.test_source()
    h, w = probe.shape
    probe.close()
    state.echo(
        f"[generate] {s.train_events} training + {s.test_events} held-out synthetic SBND events, "
        f"3 planes of {h}x{w} (downsample {s.downsample}); held-out file {state.test_file}"
    )


def _held_out_metrics(state: DemoState, model) -> dict:
    """CosmicTagger metrics of ``model`` (None: a freshly built network) on the held-out file."""
    from tpcflow.models.runtime import pick_device
    from tpcflow.train.network import TrainNetwork, evaluate
    from tpcflow.train.resolve import resolve_network

    cfg = state.config
    source = state.test_source()
    try:
        net = TrainNetwork(cfg, resolve_network(cfg), pick_device(cfg.run.compute_mode), source.shape)
        if model is not None:
            net.use_model(model)
        return evaluate(net, source)
    finally:
        source.close()


def stage_train(state: DemoState) -> None:
    """Measure the untrained network on the held-out events, then train it."""
    import torch

    from tpcflow.train.loop import train

    torch.manual_seed(state.settings.seed)
    state.metrics["untrained (held-out)"] = _held_out_metrics(state, None)
    state.echo(f"[train] untrained network: held-out mIoU {state.metrics['untrained (held-out)'].get('Average/mIoU', float('nan')):.4f}")
    t0 = time.perf_counter()
    state.train_result = train(state.config, echo=lambda *a, **k: None)
    r = state.train_result
    state.timings["train_s"] = time.perf_counter() - t0
    state.echo(
        f"[train] {r.network_config.name} UResNet, {r.n_parameters:,} parameters, {len(r.losses)} iterations "
        f"in {state.timings['train_s']:.0f} s ({r.images_per_second:.1f} img/s): loss {r.losses[0]:.3f} -> {r.losses[-1]:.3f}"
    )


def stage_evaluate(state: DemoState) -> None:
    """CosmicTagger metrics of the trained network on the held-out events."""
    m = _held_out_metrics(state, state.train_result.model)
    state.metrics["trained (held-out)"] = m
    state.echo(f"[evaluate] trained network: held-out mIoU {m.get('Average/mIoU', float('nan')):.4f}")


def _infer(state: DemoState, name: str, file: Path, downsample: int) -> None:
    from tpcflow.train.inference import infer

    s = state.settings
    overrides = [
        f"run.id=inference_{name}",
        f"run.output_dir={s.out}",
        "run.minibatch_size=1",
        "run.iterations=0",
        f"mode.weights_location={state.train_result.checkpoint}",
        f"run.compute_mode={state.config.run.compute_mode}",
        f"mode.event_displays={s.displays}",
        f"data.file={file}",
        f"data.downsample={downsample}",
        "run.channels_last=true",
        f"run.progress={str(bool(s.progress)).lower()}",
        f"mode.optimizer.loss_balance_scheme={state.config.mode.optimizer.loss_balance_scheme}",
        *s.network,
        *(e for e in s.extra if e.startswith("run.num_threads=")),
    ]
    cfg = load_config(overrides, mode="inference")
    res = infer(cfg, echo=lambda *a, **k: None)
    state.inference[name] = res
    state.metrics[f"inference: {name}"] = res.metrics
    state.echo(f"[inference] {name}: {res.events} events -> {res.output_file}, {len(res.displays)} displays in {res.displays[0].parent if res.displays else '-'}")


def stage_inference(state: DemoState) -> None:
    """Inference on the held-out file, and on the real file when there is one."""
    _infer(state, "synthetic", state.test_file, 0)
    s = state.settings
    real = find_real_file() if s.real_file == "auto" else (Path(s.real_file) if s.real_file else None)
    if real is not None and real.is_file():
        _infer(state, "real", real, s.downsample)
    elif s.real_file is None:
        state.echo("[inference] real file: skipped (--real-file none)")
    elif s.real_file == "auto":
        state.echo("[inference] real cosmic_tagging_light.h5 not found ($TPCFLOW_DATA or ../shared/data): skipped")
    else:
        state.echo(f"[inference] real file {str(real)!r} does not exist: skipped")


def stage_serve(state: DemoState) -> None:
    """Serve the trained checkpoint through a broker + local worker and segment the held-out file with submit.

    The predictions served over MDP are compared voxel by voxel with the direct inference of the
    ``inference`` stage; they must cover the same voxels, and the count of equal labels is reported.

    Raises
    ------
    RuntimeError
        If the served and the direct predictions cover different voxels.
    """
    import shutil

    import numpy as np

    from tpcflow.io import open_larcv3
    from tpcflow.io.products import PREDICTION_PRODUCER
    from tpcflow.serve.mdp.inprocess import segment_via_broker

    out = state.settings.out / "served_predictions.h5"
    out.unlink(missing_ok=True)
    shutil.rmtree(out.with_name(out.name + ".partial"), ignore_errors=True)
    res = segment_via_broker(state.train_result.checkpoint, [state.test_file], out, device="cpu",
                             progress=state.settings.progress)
    direct = state.inference["synthetic"].output_file
    same = total = 0
    with open_larcv3(out) as served, open_larcv3(direct) as ref:
        for entry in range(len(served)):
            key = f"sparse2d/{PREDICTION_PRODUCER}"
            got = served.read(entry, [key]).products[key]
            want = ref.read(entry, [key]).products[key]
            for g, w in zip(got, want, strict=True):
                if not np.array_equal(g.index, w.index):
                    raise RuntimeError(f"served and direct predictions cover different voxels at entry {entry}")
                same += int(np.count_nonzero(g.values == w.values))
                total += len(w)
    state.timings["serve_s"] = res.seconds
    state.served_agreement = (same, total)
    state.echo(
        f"[serve] {res.entries} events segmented through an MDP broker + worker (tpcflow submit) in "
        f"{res.seconds:.1f} s -> {out}; labels agree with direct inference on {same}/{total} voxels"
    )


def stage_report(state: DemoState) -> None:
    """Print the metrics table, CosmicTagger's targets beside it, and write ``summary.json`` and ``metrics.txt``."""
    from tpcflow.models.metrics import REFERENCE_TARGETS

    table = format_metrics({**state.metrics, "CosmicTagger target": dict(REFERENCE_TARGETS)})
    state.echo("\n" + table)
    out = state.settings.out
    atomic.write_text(out / "metrics.txt", table + "\n")
    summary = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(state.settings).items()},
        "metrics": state.metrics,
        "timings": state.timings,
        "checkpoint": str(state.train_result.checkpoint) if state.train_result else None,
        "displays": {k: [str(p) for p in r.displays] for k, r in state.inference.items()},
    }
    atomic.write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))


def demo_stages() -> list[tuple[str, Callable[[DemoState], None]]]:
    """The demo's stages in order; extend or filter this list to change the demo."""
    return [
        ("generate", stage_generate),
        ("train", stage_train),
        ("evaluate", stage_evaluate),
        ("inference", stage_inference),
        ("serve", stage_serve),
        ("report", stage_report),
    ]


def check_settings(settings: DemoSettings) -> None:
    """Refuse, before any work, a ``--downsample`` whose images the demo's network cannot halve enough.

    Raises
    ------
    ConfigError
        Naming the demo's own option (``--downsample``) and the values that fit.
    """
    from tpcflow.errors import ConfigError
    from tpcflow.sim.geometry import image_metas

    depth = load_config(list(settings.network)).network.resolve().network_depth
    w, h = image_metas(0)[0].number_of_voxels  # SBND's full grid, CosmicTagger layout (H, W) = (h, w)
    fits = [k for k in range(0, 11) if (h >> k) % (1 << depth) == 0 and (w >> k) % (1 << depth) == 0 and h >> k]
    if settings.downsample not in fits:
        raise ConfigError(f"--downsample {settings.downsample} makes {h >> settings.downsample}x"
                          f"{w >> settings.downsample} images, which the demo's network (depth {depth}) cannot "
                          f"halve {depth} times: use --downsample {min(fits)} to {max(fits)}")


def run_demo(settings: DemoSettings = DemoSettings(), *, echo=print, stages=None) -> DemoState:
    """Run the demo's stages and return the final state (metrics, results, paths).

    Raises
    ------
    ConfigError
        Settings that cannot work (:func:`check_settings`), before any stage runs.
    """
    check_settings(settings)
    state = DemoState(settings=settings, echo=echo)
    t0 = time.perf_counter()
    for name, stage in stages if stages is not None else demo_stages():
        t = time.perf_counter()
        stage(state)
        state.timings[f"{name}_stage_s"] = time.perf_counter() - t
    state.timings["total_s"] = time.perf_counter() - t0
    echo(f"demo finished in {state.timings['total_s']:.0f} s; outputs in {settings.out}")
    return state
