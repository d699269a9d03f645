"""What train, iotest and inference share: building the network on a device, forward, metrics.

The network returns one logits tensor ``[B, n_classes, P, H, W]`` (:mod:`tpcflow.models.logits`).
Training and validation of the sparse network take its fast path instead (:meth:`TrainNetwork.step`):
the voxels of the minibatch go through ``forward_sparse``, the loss is per voxel and the metrics
come from the voxels, equal to the dense metrics (:mod:`tpcflow.models.sparse.minibatch`).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from tpcflow.config import Config, config_to_dict
from tpcflow.errors import ConfigError
from tpcflow.models.runtime import autocast_context
from tpcflow.models.sparse.minibatch import SparseMinibatch, voxel_metrics
from tpcflow.train.resolve import check_downsample_fits

__all__ = ["MeanAccumulator", "TrainNetwork", "batch_to_device", "evaluate", "minibatch_size", "takes_voxels"]


def takes_voxels(cfg: Config, netcfg, world_size: int = 1) -> bool:
    """Whether a run feeds the network voxel minibatches (``make_source(..., sparse=True)``).

    True for the sparse network run as it is; DDP and torch.compile wrap ``forward`` only, so
    they take dense minibatches (:attr:`TrainNetwork.sparse` agrees).
    """
    return netcfg.conv_mode == "sparse" and not cfg.run.compile and world_size == 1


def minibatch_size(x) -> int:
    """Images in a minibatch: a dense ``[B, P, H, W]`` tensor or a :class:`SparseMinibatch`."""
    return x.batch_size if isinstance(x, SparseMinibatch) else int(x.shape[0])


def batch_to_device(batch: dict, device: torch.device, channels_last: bool = False):
    """The minibatch on ``device``: ``(x, y)``.

    Dense batches: image float32 ``[B,3,H,W]`` and label int64 ``[B,3,H,W]`` (None without labels).
    Sparse batches (``"voxels"``): the :class:`SparseMinibatch` (its labels inside) and None.
    """
    if "voxels" in batch:
        return batch["voxels"].to(device), None
    x = torch.as_tensor(batch["image"]).to(device, non_blocking=True)
    y = torch.as_tensor(batch["label"]).to(device, non_blocking=True).long() if "label" in batch else None
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


class TrainNetwork:
    """A network on its device with the run's precision and memory-format settings.

    Parameters
    ----------
    cfg : Config
    netcfg : NetworkConfig
    device : torch.device
    image_shape : (H, W)
        Checked against ``network_depth`` before anything is built.
    """

    def __init__(self, cfg: Config, netcfg, device: torch.device, image_shape):
        from tpcflow.models.loss import SegmentationLoss
        from tpcflow.models.registry import build_network, count_parameters

        check_downsample_fits(tuple(image_shape), netcfg, cfg.data.downsample)
        self.cfg, self.netcfg, self.device = cfg, netcfg, device
        self.model = build_network(netcfg).to(device)
        if cfg.run.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if cfg.run.activation_checkpointing:
            if not hasattr(self.model, "activation_checkpointing"):
                raise ConfigError(f"run.activation_checkpointing: network conv_mode={netcfg.conv_mode!r} does not support it")
            self.model.activation_checkpointing = True
        self.n_parameters = count_parameters(self.model)
        self.autocast, self.needs_scaler = autocast_context(cfg.run.precision, device)
        self.loss_fn = SegmentationLoss(cfg.mode.optimizer.loss_balance_scheme)
        self.forward_model = self.model  # replaced by the DDP / compiled wrapper

    @property
    def sparse(self) -> bool:
        """Whether :meth:`step` takes the sparse network's voxel path (not under DDP or torch.compile,
        which wrap ``forward`` only)."""
        return hasattr(self.model, "forward_sparse") and self.forward_model is self.model

    def step(self, x, y: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss (a scalar tensor with its graph) and metrics of one labelled minibatch.

        ``x`` is a dense ``[B, P, H, W]`` tensor with labels ``y``, or a :class:`SparseMinibatch`
        (labels inside, ``y`` None) from a sparse source.  Dense networks: the dense logits,
        :class:`~tpcflow.models.loss.SegmentationLoss` over every pixel,
        :func:`~tpcflow.models.metrics.segmentation_metrics`.  The sparse network: its voxels only
        (:attr:`sparse`; a dense minibatch is made sparse first), with the loss over the voxels and
        :func:`~tpcflow.models.sparse.minibatch.voxel_metrics` (equal to the dense metrics).  With the
        ``focal`` scheme (the default) the two losses are equal too, as pixels without charge are
        certain background in the dense output; the other schemes average over voxels, not pixels.

        Raises
        ------
        ValueError
            A sparse minibatch for a network that is not run on voxels.
        """
        if isinstance(x, SparseMinibatch):
            if not self.sparse:
                raise ValueError("a voxel minibatch needs the sparse network run as it is (no DDP, no torch.compile)")
            batch = x
        elif not self.sparse:
            logits = self.forward(x)
            return self.loss(logits, y), self.metrics(logits.detach(), y)
        else:
            batch = SparseMinibatch.from_dense(x, y, self.netcfg.n_classes)
        with self.autocast():
            logits = self.model.forward_sparse(batch.planes(), batch.batch_size, batch.shape)
        logits = [lg.float() for lg in logits]
        loss = self.loss_fn(logits, batch.labels)
        return loss, {k: float(v) for k, v in voxel_metrics([lg.detach() for lg in logits], batch).items()}

    def use_model(self, model: torch.nn.Module) -> None:
        """Run ``model`` (for example a trained one) instead of the freshly built network."""
        self.model = self.forward_model = model

    def compile(self) -> None:
        """Wrap the forward model in torch.compile when ``run.compile`` is set."""
        if self.cfg.run.compile:
            self.forward_model = torch.compile(self.forward_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, n_classes, P, H, W] in float32."""
        with self.autocast():
            out = self.forward_model(x)
        return out.float()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(logits, labels)

    @staticmethod
    def metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        from tpcflow.models.metrics import segmentation_metrics

        with torch.no_grad():
            return {k: float(v) for k, v in segmentation_metrics(logits, labels).items()}

    def describe(self) -> str:
        return f"network {self.netcfg.name} ({self.netcfg.conv_mode}): {self.n_parameters:,} parameters"

    def resolved_dict(self) -> dict:
        return config_to_dict(self.cfg, dataclasses.asdict(self.netcfg))


def evaluate(runner: TrainNetwork, source, max_batches: int | None = None) -> dict[str, float]:
    """Average loss and metrics over ``source`` (eval mode, no gradient), weighted by batch size."""
    model = runner.model
    was_training = model.training
    model.eval()
    acc = MeanAccumulator()
    try:
        with torch.no_grad():
            for i, batch in enumerate(source):
                if max_batches is not None and i >= max_batches:
                    break
                x, y = batch_to_device(batch, runner.device, runner.cfg.run.channels_last)
                loss, metrics = runner.step(x, y)
                acc.add({"loss": float(loss), **metrics}, weight=minibatch_size(x))
    finally:
        model.train(was_training)
    return acc.mean()


class MeanAccumulator:
    """Weighted means of metric dicts that skip NaN values (a metric undefined for a batch)."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.weights: dict[str, float] = {}

    def add(self, metrics: dict[str, float], weight: float = 1.0) -> None:
        for k, v in metrics.items():
            self.sums.setdefault(k, 0.0)
            self.weights.setdefault(k, 0.0)
            if not math.isnan(v):
                self.sums[k] += v * weight
                self.weights[k] += weight

    def mean(self) -> dict[str, float]:
        return {k: (self.sums[k] / w if w else math.nan) for k, w in self.weights.items()}
