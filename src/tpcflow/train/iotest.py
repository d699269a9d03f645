"""CosmicTagger's ``iotest`` mode: iterate the data pipeline alone and time it."""

from __future__ import annotations

import time

import numpy as np

from tpcflow.config import Config
from tpcflow.train.resolve import make_source

__all__ = ["iotest"]


def iotest(cfg: Config, *, echo=print) -> dict:
    """Read ``run.iterations`` minibatches (0: one epoch) and return throughput figures.

    Returns
    -------
    dict
        ``minibatches``, ``images``, ``shape`` (H, W), ``seconds``, ``images_per_second``,
        ``mean_voxels`` (non-zero charge voxels per image, all planes).
    """
    source = make_source(cfg, "train", cycle=cfg.run.iterations > 0)
    n = cfg.run.iterations or max(1, len(source) // cfg.run.minibatch_size)
    images, voxels, done = 0, 0, 0
    t0 = time.perf_counter()
    try:
        for _ in range(n):
            try:
                batch = next(source)
            except StopIteration:
                break
            images += batch["image"].shape[0]
            voxels += int(np.count_nonzero(batch["image"]))
            done += 1
    finally:
        source.close()
    dt = max(time.perf_counter() - t0, 1e-9)
    return {
        "minibatches": done,
        "images": images,
        "shape": tuple(source.shape),
        "seconds": dt,
        "images_per_second": images / dt,
        "mean_voxels": voxels / max(images, 1),
    }
