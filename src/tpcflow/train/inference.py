"""Inference: predictions as larcv3 sparse2d, per-event metrics CSV, event displays.

Output file (larcv3, written atomically by :class:`tpcflow.io.Larcv3Writer`), one entry per
input event with the input's event id, 3 projections each, on the voxels where the (pooled)
input charge is non-zero:

* ``sparse2d/<image_producer>``: the input charge the network saw [ADC];
* ``sparse2d/<prediction_producer>``: the predicted label (0 background, 1 cosmic, 2 neutrino);
* ``sparse2d/<prediction_producer>_score``: the softmax probability of that label.

The metas are the input's with ``number_of_voxels`` divided by ``2**data.downsample``.
Per-event metrics (CosmicTagger definitions, :func:`tpcflow.models.metrics.segmentation_metrics`)
go to ``<run dir>/inference_metrics.csv``.
"""

from __future__ import annotations

import csv
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tpcflow import atomic
from tpcflow.config import Config
from tpcflow.errors import ConfigError
from tpcflow.io.products import Event, EventID, ImageMeta, SparseProjection, image_index
from tpcflow.models.checkpoint import check_compatible, read_checkpoint, restore_model
from tpcflow.models.runtime import pick_device
from tpcflow.train.checkpoint import CheckpointManager
from tpcflow.train.displays import draw_event
from tpcflow.train.network import TrainNetwork, batch_to_device
from tpcflow.train.resolve import make_source, resolve_network, run_directory

__all__ = ["PREDICTION_PRODUCER", "InferenceResult", "infer", "load_weights", "sparse_planes"]

PREDICTION_PRODUCER = "cosmictagger"


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


def sparse_planes(image: np.ndarray, values: list[np.ndarray], metas: list[ImageMeta]) -> list[list[SparseProjection]]:
    """Turn CosmicTagger-layout planes into sparse2d projections on the non-zero charge voxels.

    Parameters
    ----------
    image : (P, H, W) charge; voxels with ``image != 0`` are kept
    values : list of (P, H, W) arrays, one per product
    metas : P ImageMeta with ``number_of_voxels = (W, H)``

    Returns
    -------
    list (one per product) of lists of P SparseProjection, indices ascending
    (``index = w * H + h``, the transpose of larcv3's row-major (W, H) grid).
    """
    out = [[] for _ in values]
    n_planes, h, w = image.shape
    for p in range(n_planes):
        hh, ww = np.nonzero(image[p])  # (h, w) of the non-zero voxels
        index = image_index(hh, ww, (w, h))
        order = np.argsort(index, kind="stable")
        index = index[order]
        for k, arr in enumerate(values):
            out[k].append(SparseProjection(metas[p], index.copy(), arr[p][hh[order], ww[order]].astype(np.float32)))
    return out


def _output_metas(metas, shape) -> list[ImageMeta]:
    h, w = shape
    return [dataclasses.replace(m, number_of_voxels=(int(w), int(h))) for m in metas]


def infer(cfg: Config, *, echo=print, max_events: int | None = None) -> InferenceResult:
    """Run the trained network over ``data.file`` (or synthetic events) and write the outputs.

    ``run.iterations`` > 0 limits the number of minibatches.

    Raises
    ------
    ConfigError
        Missing weights, mismatched network configuration, missing product, bad shape.
    """
    from tpcflow.io import Larcv3Writer

    device = pick_device(cfg.run.compute_mode, setting="run.compute_mode")
    if cfg.run.num_threads:
        torch.set_num_threads(cfg.run.num_threads)
    ckpt, wpath, netcfg = load_weights(cfg, resolve_network(cfg), device)
    source = make_source(cfg, "train", cycle=False, shuffle=False)
    out_metas = _output_metas(source.metas, source.shape)
    runner = TrainNetwork(cfg, netcfg, device, source.shape)
    restore_model(runner.model, netcfg, ckpt, file_path=wpath)
    runner.model.eval()
    runner.compile()
    echo(f"{runner.describe()}; weights {wpath}")

    run_dir = run_directory(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    out_path = Path(cfg.mode.output_file) if cfg.mode.output_file else run_dir / "predictions.h5"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    csv_path = run_dir / "inference_metrics.csv"
    result = InferenceResult(output_file=out_path, metrics_csv=csv_path)
    image_key = f"sparse2d/{cfg.data.image_producer}"
    t0 = time.perf_counter()
    with Larcv3Writer(out_path) as writer, torch.no_grad():
        for i, batch in enumerate(source):
            if cfg.run.iterations and i >= cfg.run.iterations:
                break
            x, y = batch_to_device(batch, device, cfg.run.channels_last)
            logits = runner.forward(x)  # [B, C, P, H, W]
            prob = torch.softmax(logits, dim=1)
            score, pred = prob.max(dim=1)
            pred_np, score_np = pred.cpu().numpy(), score.cpu().numpy()
            for b in range(x.shape[0]):
                if max_events is not None and result.events >= max_events:
                    break
                eid = EventID(*(int(v) for v in batch["event_ids"][b]))
                image = batch["image"][b]
                charge, labels, scores = sparse_planes(image, [image, pred_np[b], score_np[b]], out_metas)
                writer.write(
                    Event(
                        event_id=eid,
                        products={
                            image_key: charge,
                            f"sparse2d/{PREDICTION_PRODUCER}": labels,
                            f"sparse2d/{PREDICTION_PRODUCER}_score": scores,
                        },
                    )
                )
                m = runner.metrics(logits[b : b + 1], y[b : b + 1])
                entry = int(batch["entries"][b]) if "entries" in batch else result.events
                result.rows.append({"entry": entry, "run": eid.run, "subrun": eid.subrun, "event": eid.event, **m})
                if len(result.displays) < cfg.mode.event_displays:
                    # the entry keeps names unique when event ids are unset (-1), as in cosmic_tagging_light.h5
                    png = run_dir / "displays" / f"entry{entry:06d}_run{eid.run}_subrun{eid.subrun}_event{eid.event}.png"
                    title = f"entry {entry}: run {eid.run} subrun {eid.subrun} event {eid.event}  mIoU {m.get('Average/mIoU', m.get('mIoU', float('nan'))):.3f}"
                    result.displays.append(draw_event(png, image, batch["label"][b], pred_np[b], title))
                result.events += 1
            if max_events is not None and result.events >= max_events:
                break
    result.images_per_second = result.events / max(time.perf_counter() - t0, 1e-9)
    _write_csv(csv_path, result.rows)
    keys = [k for k in (result.rows[0] if result.rows else {}) if k not in ("entry", "run", "subrun", "event")]
    result.metrics = {k: float(np.nanmean([r[k] for r in result.rows])) for k in keys}
    echo(f"inference: {result.events} events, {result.images_per_second:.2f} img/s -> {out_path}")
    return result


def _write_csv(path: Path, rows: list[dict]) -> None:
    with atomic.atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        if rows:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
