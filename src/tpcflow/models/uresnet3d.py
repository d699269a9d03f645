"""The 3D variant of the UResNet: planes on the depth axis, ``[1, k, k]`` kernels.

Source: CosmicTagger's README (seed 002): "The 3D implementation uses convolutions of [1,3,3] to
emulate 2D convolutions throughout the network"; as the project issue asks, the planes are mixed
at the deepest level by a ``[P, 1, 1]`` convolution (P = 3 planes).
"""

from __future__ import annotations

import torch
from torch import nn

from tpcflow.config.network import NetworkConfig
from tpcflow.models.blocks import BlockSeries, ConvBNAct
from tpcflow.models.uresnet import UResNetCore, check_image_shape

__all__ = ["Deepest3D", "UResNet3D", "state_dict_2d_to_3d"]


class Deepest3D(nn.Module):
    """Mix the planes: ``[P, 1, 1]`` conv ``c_d -> Bn`` (valid padding, depth P -> 1), blocks at ``Bn``,
    then a 1x1x1 ConvBNAct ``Bn -> P * c_d`` whose channels are split back onto the P planes.

    This is the 2D network's concat / 1x1 squeeze / expand / split written as 3D convolutions: the
    parameter count is the same (reference spec 3.1: 86,784 + 16,391,680 + 87,024 in the default).
    """

    def __init__(self, config: NetworkConfig):
        super().__init__()
        cfg = config
        c_d, planes, bn = cfg.channels(cfg.network_depth), cfg.n_planes, cfg.bottleneck_deepest
        kw = dict(bias=cfg.bias, normalization=cfg.normalization, dims=3)
        self.squeeze = ConvBNAct(c_d, bn, 1, **kw)
        self.squeeze.conv = nn.Conv3d(c_d, bn, (planes, 1, 1), bias=cfg.bias)
        self.blocks = BlockSeries(bn, cfg.blocks_deepest_layer, cfg.filter_size_deepest, residual=cfg.residual, **kw)
        self.expand = ConvBNAct(bn, planes * c_d, 1, **kw)
        self.planes = planes
        self.c_d = c_d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, p, h, w = x.shape
        y = self.expand(self.blocks(self.squeeze(x)))  # [B, P * c_d, 1, h, w]
        return y.reshape(b, p, c, h, w).transpose(1, 2)


class UResNet3D(UResNetCore):
    """UResNet on ``[B, 1, P, H, W]`` with ``[1, k, k]`` kernels and a ``[P, 1, 1]`` deepest mixer.

    ``forward(x)`` takes ``x`` ``[B, P, H, W]`` (like the 2D network) and returns one logits
    tensor ``[B, n_classes, P, H, W]`` (:mod:`tpcflow.models.logits`).  The parameters correspond one to one to the 2D
    network's (:func:`state_dict_2d_to_3d` converts a 2D state dict); the difference is that
    BatchNorm3d pools its statistics over the planes in train mode.  ``activation_checkpointing``
    works as in :class:`~tpcflow.models.uresnet.UResNet`.
    """

    conv_mode = "3D"
    dims = 3

    def make_deepest(self, config: NetworkConfig) -> nn.Module:
        return Deepest3D(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing():
            check_image_shape(tuple(x.shape), self.config)
        x, skips = self.encode(x.unsqueeze(1))
        return self.decode(self.deepest(x), skips)


def state_dict_2d_to_3d(state: dict[str, torch.Tensor], config: NetworkConfig) -> dict[str, torch.Tensor]:
    """Convert a 2D UResNet state dict to the equivalent :class:`UResNet3D` state dict.

    Conv weights gain a depth axis of size 1; the deepest squeeze ``[Bn, P * c_d, 1, 1]``
    (input channel ``p * c_d + c``) becomes ``[Bn, c_d, P, 1, 1]``.
    """
    c_d, planes = config.channels(config.network_depth), config.n_planes
    out = {}
    for key, value in state.items():
        if key == "deepest.squeeze.conv.weight":
            bn = value.shape[0]
            value = value.reshape(bn, planes, c_d).transpose(1, 2)[..., None, None]
        elif key.endswith("weight") and value.dim() == 4:
            value = value.unsqueeze(2)
        out[key] = value
    return out
