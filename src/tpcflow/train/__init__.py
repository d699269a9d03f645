"""Training, validation and inference of the CosmicTagger UResNet.

* :mod:`tpcflow.train.loop`: :func:`~tpcflow.train.loop.train` (optimizer steps, averaged
  gradient accumulation, validation, checkpoints, logs, exact resume).
* :mod:`tpcflow.train.inference`: :func:`~tpcflow.train.inference.infer` (larcv3 predictions,
  per-event metrics CSV, event displays).
* :mod:`tpcflow.train.iotest`: the data pipeline alone, timed.
* :mod:`tpcflow.train.resolve`: config -> network config and data source.
* :mod:`tpcflow.train.network`: the network on its device, forward, loss, metrics, evaluation.
* :mod:`tpcflow.train.data`: the Source protocol and its one implementation (files, and synthetic
  events written to a file), resumable.
* :mod:`tpcflow.train.checkpoint`: checkpoint rotation and RNG state (the format itself is
  :mod:`tpcflow.models.checkpoint`).
* :mod:`tpcflow.train.optim`, :mod:`tpcflow.train.logging`,
  :mod:`tpcflow.train.distributed`, :mod:`tpcflow.train.displays`, :mod:`tpcflow.train.report`.

Submodules are imported on demand; this package itself imports nothing heavy.
"""
