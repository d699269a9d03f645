"""Inference: predictions on the input's own voxels, per-event metrics CSV, event displays.

The network runs over every entry of ``data.file`` (``run.iterations=N`` limits it to N
minibatches), with or without truth labels.  Output file (larcv3, written atomically by
:class:`tpcflow.io.Larcv3Writer`), one entry per input entry with its event id, the products
``tpcflow submit`` writes (:func:`tpcflow.io.products.prediction_producers`):

* ``sparse2d/cosmicseg_pred``: the predicted label (0 background, 1 cosmic, 2 neutrino);
* ``sparse2d/cosmicseg_pred_score``: the softmax probability of that label;

on the input's own grid and metas: projection ``p`` holds exactly the voxels of the input's
``sparse2d/<data.image_producer>`` projection ``p``, in the same order, so that
``pred.values[i]`` is the label of ``input.index[i]``.  The network sees the images pooled by
``2**data.downsample``; each voxel gets the label of the pooled pixel it falls in.

Per-event rows go to ``<run dir>/inference_metrics.csv``: ``entry, run, subrun, event, voxels,
cosmic_fraction, neutrino_fraction`` (of the predicted labels over the voxels), then, when the
file has labels, the CosmicTagger metrics on the pooled grid
(:func:`tpcflow.models.metrics.segmentation_metrics`).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tpcflow import atomic
from tpcflow.config import Config
from tpcflow.errors import ConfigError
from tpcflow.io.products import (
    PREDICTION_PRODUCER,
    Event,
    EventID,
    SparseProjection,
    image_coordinates,
    image_shape,
    prediction_producers,
)
from tpcflow.models.checkpoint import check_compatible, input_pooling, read_checkpoint, restore_model
from tpcflow.models.runtime import pick_device
from tpcflow.models.sparse.minibatch import SparseMinibatch, predictions_at, voxel_metrics
from tpcflow.train.checkpoint import CheckpointManager
from tpcflow.train.displays import draw_event
from tpcflow.train.network import TrainNetwork, batch_to_device, minibatch_size, takes_voxels
from tpcflow.train.resolve import make_run_directory, make_source, resolve_network, run_directory

__all__ = ["InferenceResult", "check_resolution", "infer", "load_weights", "voxel_predictions"]


@dataclass
class InferenceResult:
    """Outputs of :func:`infer`: paths, per-event rows and their mean."""

    output_file: Path
    metrics_csv: Path
    displays: list[Path] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    events: int = 0
    images_per_second: float = 0.0


def load_weights(cfg: Config, netcfg, device) -> tuple[dict, Path, object]:
    """Find and read the checkpoint: ``mode.weights_location`` or the run's newest.

    When the config names no network (default preset, no overrides), the checkpoint's own
    network configuration is used; otherwise they must match.

    Returns
    -------
    (checkpoint dict, path, NetworkConfig)

    Raises
    ------
    ConfigError
        No checkpoint found, or a checkpoint of another network configuration.
    """
    from tpcflow.config.network import network_config_from_dict

    if cfg.mode.weights_location:
        path = Path(cfg.mode.weights_location)
    else:
        path = CheckpointManager(run_directory(cfg) / "checkpoints").latest()
        if path is None:
            raise ConfigError(
                f"no checkpoint in {run_directory(cfg) / 'checkpoints'}: set mode.weights_location=PATH "
                "or run.id / run.output_dir of a trained run"
            )
    ckpt = read_checkpoint(path, map_location=device)
    if cfg.network.preset == "uresnet" and not cfg.network.overrides:
        netcfg = network_config_from_dict(ckpt["network"])
    check_compatible(ckpt["network"], netcfg, path)
    return ckpt, path, netcfg


def check_resolution(data: dict | None, native_shape: tuple[int, int], cfg: Config, where) -> None:
    """Refuse to run a checkpoint on images of another resolution than it was trained on.

    Parameters
    ----------
    data : the checkpoint's ``"data"`` entry (:func:`tpcflow.models.checkpoint.data_section`) or None
    native_shape : (H, W) of the file's images before pooling, CosmicTagger layout
    cfg : the run's Config (``data.downsample``; synthetic files are already pooled)
    where : the checkpoint's path, for messages

    Raises
    ------
    ConfigError
        ``data.downsample`` makes images of another size than the training images from the same
        grid, or another pixel size on another grid; the message names the value to set.
    """
    if not data:
        warnings.warn(f"checkpoint {where} stores no training resolution (data.downsample): it cannot be checked",
                      UserWarning, stacklevel=3)
        return
    k_eff = 0 if cfg.data.synthetic else cfg.data.downsample
    got = (native_shape[0] >> k_eff, native_shape[1] >> k_eff)
    trained, ds = tuple(int(v) for v in data["image_shape"]), int(data["downsample"])
    if got == trained:
        return
    k = input_pooling(data, native_shape)
    size = f"{trained[0]}x{trained[1]} images (data.downsample={ds})"
    if k is not None:
        fix = ds if cfg.data.synthetic else k
        raise ConfigError(f"checkpoint {where} was trained on {size}; data.downsample={cfg.data.downsample} makes "
                          f"{got[0]}x{got[1]} images of this data: set data.downsample={fix}")
    if cfg.data.downsample != ds:
        raise ConfigError(f"checkpoint {where} was trained on {size}; this data's {native_shape[0]}x"
                          f"{native_shape[1]} grid is another one, and its pixels have the training size only "
                          f"with data.downsample={ds}")


def voxel_predictions(projections: list[SparseProjection], pred, score, downsample: int,
                      voxels: list[np.ndarray] | None = None,
                      shape: tuple[int, int] | None = None) -> tuple[list[SparseProjection], list[SparseProjection]]:
    """Labels and scores of a pooled prediction at the voxels of the input projections.

    Parameters
    ----------
    projections : P input SparseProjection (the charge product), their own grid and metas
    pred, score : the predicted label and its probability on the pooled grid: (P, h, w) arrays,
        or, with ``voxels``, P arrays (N_p,) at the pooled grid's voxels
    downsample : k; voxel (H, W) fell in pooled pixel (H >> k, W >> k) (clipped to the grid)
    voxels : P arrays (N_p, 2) int64, optional
        ``(y, x)`` of the pooled grid's voxels, sorted (the sparse network's path, no dense
        grid); pooled pixels that are no voxel are background with probability 1, as in the
        dense output of the sparse network.
    shape : (h, w)
        The pooled grid's size, with ``voxels``.

    Returns
    -------
    (labels, scores): P SparseProjection each, with the input's metas and indices, float32 values.
    """
    labels, scores = [], []
    for p, proj in enumerate(projections):
        h, w = image_coordinates(proj.index, proj.meta.number_of_voxels)
        grid = pred.shape[1:] if voxels is None else shape
        hh = np.minimum(h >> downsample, grid[0] - 1)
        ww = np.minimum(w >> downsample, grid[1] - 1)
        if voxels is None:
            lab, sc = pred[p][hh, ww], score[p][hh, ww]
        else:
            keys = voxels[p][:, 0] * grid[1] + voxels[p][:, 1]
            lab, sc = predictions_at(keys, pred[p], score[p], hh * grid[1] + ww)
        labels.append(SparseProjection(proj.meta, proj.index, np.asarray(lab).astype(np.float32)))
        scores.append(SparseProjection(proj.meta, proj.index, np.asarray(sc).astype(np.float32)))
    return labels, scores


def infer(cfg: Config, *, echo=print, max_events: int | None = None) -> InferenceResult:
    """Run the trained network over ``data.file`` (or synthetic events) and write the outputs.

    Every entry is processed unless ``run.iterations`` > 0 (minibatches) or ``max_events`` limit
    it.  Truth labels are used for metrics when the file has ``data.label_producer``.

    Raises
    ------
    ConfigError
        Missing weights, mismatched network configuration or resolution, missing charge product.
    """
    device = pick_device(cfg.run.compute_mode, setting="run.compute_mode")
    if cfg.run.num_threads:
        torch.set_num_threads(cfg.run.num_threads)
    ckpt, wpath, netcfg = load_weights(cfg, resolve_network(cfg), device)
    make_run_directory(cfg)
    source = make_source(cfg, "train", cycle=False, shuffle=False, labels=None,  # labels when the file has them
                         sparse=takes_voxels(cfg, netcfg))
    try:
        return _infer(cfg, source, ckpt, wpath, netcfg, device, echo, max_events)
    finally:
        source.close()


def _infer(cfg: Config, source, ckpt, wpath, netcfg, device, echo, max_events) -> InferenceResult:
    """The body of :func:`infer` once the checkpoint is read and the source open (closed by the caller)."""
    from tqdm.auto import tqdm

    from tpcflow.io import Larcv3Writer, open_larcv3

    native = image_shape(source.metas[0].number_of_voxels)
    check_resolution(ckpt.get("data"), native, cfg, wpath)
    k = source.data.downsample
    runner = TrainNetwork(cfg, netcfg, device, source.shape)
    restore_model(runner.model, netcfg, ckpt, file_path=wpath)
    runner.model.eval()
    runner.compile()
    echo(f"{runner.describe()}; weights {wpath}" + ("" if source.labels else "; no truth labels: no metrics"))

    run_dir = run_directory(cfg)
    out_path = Path(cfg.mode.output_file) if cfg.mode.output_file else run_dir / "predictions.h5"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    csv_path = run_dir / "inference_metrics.csv"
    result = InferenceResult(output_file=out_path, metrics_csv=csv_path)
    image_key = f"sparse2d/{source.data.image_producer}"
    label_key = f"sparse2d/{prediction_producers(PREDICTION_PRODUCER, 'label')[0]}"
    score_key = f"sparse2d/{prediction_producers(PREDICTION_PRODUCER, 'score')[0]}"
    t0 = time.perf_counter()
    with open_larcv3(source.files) as reader, Larcv3Writer(out_path) as writer, torch.no_grad():
        total = len(reader) if max_events is None else min(len(reader), max_events)
        if cfg.run.iterations:
            total = min(total, cfg.run.iterations * cfg.run.minibatch_size)
        bar = tqdm(total=total, unit="event", desc="inference", disable=not cfg.run.progress)
        for i, batch in enumerate(source):
            if cfg.run.iterations and i >= cfg.run.iterations:
                break
            x, y = batch_to_device(batch, device, cfg.run.channels_last)
            if runner.sparse:  # the sparse network on its voxels: no dense logits
                sb = x if isinstance(x, SparseMinibatch) else SparseMinibatch.from_dense(x, y, netcfg.n_classes)
                with runner.autocast():
                    vox_logits = runner.model.forward_sparse(sb.planes(), sb.batch_size, sb.shape)
                vox = [torch.softmax(lg.float(), dim=1).max(dim=1) for lg in vox_logits]
                labelled = sb.labels is not None
            else:
                logits = runner.forward(x)  # [B, C, P, H, W]
                score, pred = torch.softmax(logits, dim=1).max(dim=1)
                pred_np, score_np = pred.cpu().numpy(), score.cpu().numpy()
                labelled = y is not None
            for b in range(minibatch_size(x)):
                if result.events >= total:
                    break
                entry = int(batch["entries"][b])
                eid = EventID(*(int(v) for v in batch["event_ids"][b]))
                planes = reader.read(entry, products=[image_key]).products[image_key]
                if runner.sparse:
                    mine = [c[:, 0] == b for c in sb.coords]
                    lab, sc = voxel_predictions(
                        planes, [v.indices[m].cpu().numpy() for v, m in zip(vox, mine, strict=True)],
                        [v.values[m].cpu().numpy() for v, m in zip(vox, mine, strict=True)], k,
                        voxels=[c[m][:, 1:].cpu().numpy() for c, m in zip(sb.coords, mine, strict=True)],
                        shape=sb.shape)
                else:
                    lab, sc = voxel_predictions(planes, pred_np[b], score_np[b], k)
                writer.write(Event(event_id=eid, products={label_key: lab, score_key: sc}, entry=entry))
                row = {"entry": entry, "run": eid.run, "subrun": eid.subrun, "event": eid.event,
                       **_label_fractions(lab)}
                if not labelled:
                    m = {}
                elif runner.sparse:
                    m = voxel_metrics([lg[c[:, 0] == b] for lg, c in zip(vox_logits, sb.coords, strict=True)],
                                      sb.select(b))
                else:
                    m = runner.metrics(logits[b : b + 1], y[b : b + 1])
                result.rows.append({**row, **m})
                if len(result.displays) < cfg.mode.event_displays:
                    # the entry keeps names unique when event ids are unset (-1), as in cosmic_tagging_light.h5
                    png = run_dir / "displays" / f"entry{entry:06d}_run{eid.run}_subrun{eid.subrun}_event{eid.event}.png"
                    miou = m.get("Average/mIoU", m.get("mIoU"))
                    title = f"entry {entry}: run {eid.run} subrun {eid.subrun} event {eid.event}" + (
                        f"  mIoU {miou:.3f}" if miou is not None else "")
                    if runner.sparse:
                        image, shown = sb.image(b), sb.image(b, [v.indices for v in vox])
                        truth = sb.image(b, sb.labels) if labelled else None
                    else:
                        image, shown = batch["image"][b], pred_np[b]
                        truth = batch["label"][b] if labelled else None
                    result.displays.append(draw_event(png, image, truth, shown, title))
                result.events += 1
                bar.update(1)
            if result.events >= total:
                break
        bar.close()
    result.images_per_second = result.events / max(time.perf_counter() - t0, 1e-9)
    atomic.write_csv(csv_path, result.rows)
    keys = [k for k in (result.rows[0] if result.rows else {}) if k not in ("entry", "run", "subrun", "event")]
    result.metrics = {k: float(np.nanmean([r[k] for r in result.rows])) for k in keys}
    echo(f"inference: {result.events} events, {result.images_per_second:.2f} img/s -> {out_path}")
    return result


def _label_fractions(labels: list[SparseProjection]) -> dict:
    """Voxel count and the fractions predicted cosmic (1) and neutrino (2), over all planes."""
    values = np.concatenate([p.values for p in labels]) if labels else np.zeros(0, np.float32)
    n = len(values)
    return {"voxels": n,
            "cosmic_fraction": float(np.count_nonzero(values == 1)) / n if n else float("nan"),
            "neutrino_fraction": float(np.count_nonzero(values == 2)) / n if n else float("nan")}
