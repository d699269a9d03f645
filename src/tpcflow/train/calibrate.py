"""The network's operating point: one offset on the background logit, chosen on validation events.

The network predicts the argmax of its logits.  ``Non_Bkg_Accuracy`` is a recall of the labelled
(cosmic and neutrino) pixels, and the IoUs also count false positives, so the argmax is one operating
point among many: lowering the background logit by ``offset`` finds more labelled pixels and paints
more of their surroundings.  :func:`sweep_background_offset` measures CosmicTagger's metrics at each
offset on labelled validation events (never the events a result is reported on),
:func:`choose_offset` keeps the offset that meets ``targets`` with the most margin, and
:func:`apply_background_offset` writes it into the classifier's bias.  A calibrated network is then a
plain network: inference, the services and exports need nothing else.

:func:`calibrate` is ``tpcflow calibrate``: it reads a checkpoint, sweeps the offsets over the labelled
events of ``data.file`` and writes the calibrated checkpoint, ``calibration.csv`` and ``calibration.png``.

Source: post-hoc logit adjustment (Menon et al., "Long-tail learning via logit adjustment", ICLR
2021), restricted to one additive offset on the background class and chosen on validation events.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tpcflow.config import Config
from tpcflow.errors import ConfigError
from tpcflow.models.metrics import REFERENCE_TARGETS
from tpcflow.train.network import MeanAccumulator, TrainNetwork, batch_to_device, minibatch_size

__all__ = ["CALIBRATION_TARGETS", "DEFAULT_OFFSETS", "CalibrationResult", "apply_background_offset", "calibrate",
           "choose_offset", "classifier_bias", "sweep_background_offset", "write_sweep"]

#: -1.0, -0.95, ..., 2.0: logit units; 2 already halves the IoUs of the networks in ``docs/quality.md``
DEFAULT_OFFSETS = tuple(round(-1.0 + 0.05 * i, 2) for i in range(61))

#: CosmicTagger's bar without Total_Accuracy, which counts the background pixels (over 97 % of them)
#: and falls with any offset
CALIBRATION_TARGETS = {k: v for k, v in REFERENCE_TARGETS.items() if not k.endswith("Total_Accuracy")}


def classifier_bias(model: torch.nn.Module) -> torch.nn.Parameter:
    """The bias ``[n_classes]`` of the network's 1x1 classifier (``model.classifier``).

    Raises
    ------
    ConfigError
        (a ValueError) The network has no ``classifier`` or it has no bias (``network.bias=false``).
    """
    layer = getattr(model, "classifier", None)
    bias = getattr(layer, "bias", None)
    if not isinstance(bias, torch.Tensor):
        raise ConfigError(f"{type(model).__name__}: calibration needs the classifier's bias "
                         "(a network with network.bias=true)")
    return bias


def apply_background_offset(model: torch.nn.Module, offset: float) -> None:
    """Lower the background logit (class 0) of every pixel by ``offset`` (logit units), in place."""
    if not math.isfinite(offset):
        raise ValueError(f"background offset {offset!r} is not finite")
    bias = classifier_bias(model)
    with torch.no_grad():
        bias[0] -= offset


def sweep_background_offset(runner: TrainNetwork, source: Iterable[dict],
                            offsets: Sequence[float] = DEFAULT_OFFSETS) -> list[dict[str, float]]:
    """CosmicTagger's metrics of ``runner``'s network at each background offset.

    Parameters
    ----------
    runner : TrainNetwork
        The network on its device (dense or sparse; the sparse one is run through its dense forward).
    source : iterable of dict
        Dense labelled minibatches (``image`` and ``label`` ``[B, P, H, W]``), for example
        :class:`tpcflow.train.data.FileSource` with ``sparse=False``.
    offsets : sequence of float
        Logit units subtracted from the background logit; 0 is the argmax.

    Returns
    -------
    list of dict
        One row per offset: ``offset`` and the image-weighted means of every metric
        (``Average/<name>``, ``plane{p}/<name>``).

    Raises
    ------
    ValueError
        A minibatch without labels, or a source without minibatches.
    """
    accs = [MeanAccumulator() for _ in offsets]
    model = runner.model
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in source:
                x, y = batch_to_device(batch, runner.device, runner.cfg.run.channels_last)
                if y is None:
                    raise ValueError("calibration needs dense labelled minibatches (an 'image' and a 'label' in each)")
                logits = runner.forward(x)
                for acc, offset in zip(accs, offsets):
                    shifted = logits.clone()
                    shifted[:, 0] -= offset
                    acc.add(runner.metrics(shifted, y), weight=minibatch_size(x))
    finally:
        model.train(was_training)
    if not accs or not accs[0].weights:
        raise ValueError("calibration needs at least one labelled minibatch")
    return [{"offset": float(offset), **acc.mean()} for offset, acc in zip(offsets, accs)]


def choose_offset(rows: Sequence[Mapping[str, float]],
                  targets: Mapping[str, float] = CALIBRATION_TARGETS) -> Mapping[str, float]:
    """The row of :func:`sweep_background_offset` that meets ``targets`` with the most margin.

    The score of a row is its worst ``value / target`` over ``targets`` (keys ``Average/<name>``; a NaN
    value scores −inf); the highest score wins, and among equal scores the offset nearest 0.
    """
    if not rows:
        raise ValueError("no offsets to choose from")

    def score(row):
        ratios = [row.get(k, math.nan) / t for k, t in targets.items()]
        worst = min((r if not math.isnan(r) else -math.inf) for r in ratios)
        return worst, -abs(row["offset"])

    return max(rows, key=score)


@dataclass
class CalibrationResult:
    """Outputs of :func:`calibrate`."""

    checkpoint: Path
    offset: float  #: chosen on these events, in logit units
    total_offset: float  #: in the written checkpoint, with an earlier calibration's
    chosen: dict = field(default_factory=dict)  #: the Average metrics at ``offset``
    argmax: dict = field(default_factory=dict)  #: the Average metrics at offset 0
    sweep: list[dict] = field(default_factory=list)
    csv: Path | None = None
    plot: Path | None = None


def calibrate(cfg: Config, *, echo=print) -> CalibrationResult:
    """Choose the background offset of a trained network on the labelled events of ``data.file``.

    The checkpoint is ``mode.weights_location`` or the run's newest (as ``tpcflow inference``);
    ``data.downsample`` must give its training resolution; ``run.iterations=N`` limits the sweep to N
    minibatches.  Writes ``mode.output_file`` (default ``<run dir>/calibrated.pt``: the same network
    with the offset in its classifier's bias, and a ``calibration`` entry: the offset, the events and
    the metrics), ``<run dir>/calibration.csv`` (the ``Average`` metrics at every offset) and
    ``<run dir>/calibration.png``.

    Raises
    ------
    ConfigError
        Missing weights, a network or resolution that does not match, a network without a classifier
        bias, events without labels or without a labelled pixel.
    """
    from tpcflow.io.products import image_shape
    from tpcflow.models.checkpoint import restore_model, save_checkpoint
    from tpcflow.models.runtime import pick_device
    from tpcflow.train.inference import check_resolution, load_weights
    from tpcflow.train.resolve import make_run_directory, make_source, resolve_network

    device = pick_device(cfg.run.compute_mode, setting="run.compute_mode")
    ckpt, wpath, netcfg = load_weights(cfg, resolve_network(cfg), device)
    run_dir = make_run_directory(cfg)
    source = make_source(cfg, "train", cycle=False, shuffle=False, labels=True, sparse=False)
    try:
        check_resolution(ckpt.get("data"), image_shape(source.metas[0].number_of_voxels), cfg, wpath)
        runner = TrainNetwork(cfg, netcfg, device, source.shape)
        restore_model(runner.model, netcfg, ckpt, file_path=wpath)
        classifier_bias(runner.model)  # before the sweep: a network without one fails at once
        echo(f"{runner.describe()}; weights {wpath}; sweeping {len(DEFAULT_OFFSETS)} background offsets")
        batches = itertools.islice(source, cfg.run.iterations) if cfg.run.iterations else source
        sweep = sweep_background_offset(runner, batches)
    finally:
        source.close()
    if all(math.isnan(r["Average/Non_Bkg_Accuracy"]) for r in sweep):
        raise ConfigError(f"data.file={cfg.data.file}: the events read have no labelled (cosmic or neutrino) pixel; "
                          "calibration needs labelled validation events")
    best = choose_offset(sweep)
    apply_background_offset(runner.model, best["offset"])
    earlier = float(ckpt.get("calibration", {}).get("background_offset", 0.0))
    average = {k: v for k, v in best.items() if k.startswith("Average/")}
    record = {"background_offset": earlier + best["offset"], "files": [str(f) for f in source.files],
              "targets": dict(CALIBRATION_TARGETS), "metrics": average}
    extra = {k: ckpt[k] for k in ("data", "best", "iteration") if k in ckpt}
    out = Path(cfg.mode.output_file) if cfg.mode.output_file else run_dir / "calibrated.pt"
    save_checkpoint(out, runner.model, netcfg, {**extra, "calibration": record})
    rows = [{"offset": r["offset"], **{k: r[k] for k in r if k.startswith("Average/")}} for r in sweep]
    argmax = next((r for r in rows if r["offset"] == 0.0), {})
    result = CalibrationResult(checkpoint=out, offset=best["offset"], total_offset=earlier + best["offset"],
                               chosen=average, argmax=argmax, sweep=rows)
    result.csv, result.plot = write_sweep(run_dir, rows, best["offset"])
    echo(f"background offset {best['offset']:+.2f} -> {out}")
    return result


def write_sweep(folder: Path, rows: Sequence[Mapping[str, float]], chosen: float,
                targets: Mapping[str, float] = CALIBRATION_TARGETS) -> tuple[Path, Path]:
    """Write ``calibration.csv`` (``rows``) and ``calibration.png`` (the headline metrics against the offset,
    ``targets`` dotted, the ``chosen`` offset marked) into ``folder``; return both paths."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from tpcflow.atomic import atomic_path, write_csv

    path_csv, path_png = write_csv(Path(folder) / "calibration.csv", rows), Path(folder) / "calibration.png"
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    offsets = [r["offset"] for r in rows]
    for name in ("Non_Bkg_Accuracy", "Cosmic_IoU", "Neutrino_IoU"):
        ax.plot(offsets, [r[f"Average/{name}"] for r in rows], label=name)
        target = targets.get(f"Average/{name}")
        if target is not None:
            ax.axhline(target, ls=":", lw=0.8, color=ax.lines[-1].get_color())
    ax.axvline(chosen, color="k", lw=0.8, label=f"chosen {chosen:+.2f}")
    ax.set_xlabel("background logit offset")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("operating point on the validation events (dotted: targets)")
    with atomic_path(path_png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path_csv, path_png
