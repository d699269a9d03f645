"""Network registry: presets, ``build_network``, parameter counts.

The registry is an explicit dict from ``conv_mode`` to builder; presets are CosmicTagger's
``uresnet`` (default), ``a21`` and ``polaris`` (reference spec, section 1).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from tpcflow.config.network import CHOICES, PRESETS, NetworkConfig, get_preset, network_config_from_dict
from tpcflow.errors import ConfigError

__all__ = [
    "BUILDERS",
    "CHOICES",
    "PRESETS",
    "NetworkConfig",
    "build_network",
    "count_parameters",
    "get_preset",
    "meta_network",
    "network_config_from_dict",
]


def _build_2d(config: NetworkConfig) -> nn.Module:
    from tpcflow.models.uresnet import UResNet

    return UResNet(config)


def _build_3d(config: NetworkConfig) -> nn.Module:
    from tpcflow.models.uresnet3d import UResNet3D

    return UResNet3D(config)


def _build_sparse(config: NetworkConfig) -> nn.Module:
    from tpcflow.models.sparse.uresnet import SparseUResNet

    return SparseUResNet(config)


#: conv_mode -> builder
BUILDERS: dict[str, Callable[[NetworkConfig], nn.Module]] = {
    "2D": _build_2d,
    "3D": _build_3d,
    "sparse": _build_sparse,
}


def build_network(config: NetworkConfig) -> nn.Module:
    """Build the network described by ``config`` (dispatch on ``config.conv_mode``).

    Returns
    -------
    nn.Module
        ``forward(x [B, 3, H, W] float32)`` returns one logits tensor ``[B, n_classes, 3, H, W]``
        (:mod:`tpcflow.models.logits`).  Conv weights are Xavier-uniform, biases zero.

    Raises
    ------
    ConfigError
        If ``config`` is not a :class:`NetworkConfig` or its ``conv_mode`` is unknown.
    """
    if not isinstance(config, NetworkConfig):
        raise ConfigError(f"build_network: expected a NetworkConfig, but got {type(config).__name__}")
    try:
        builder = BUILDERS[config.conv_mode]
    except KeyError:
        raise ConfigError(
            f"network.conv_mode: {config.conv_mode!r} is not one of {', '.join(BUILDERS)}"
        ) from None
    return builder(config)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (works on ``meta``-device models too)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def meta_network(config: NetworkConfig) -> nn.Module:
    """Build ``config`` on the ``meta`` device (no memory, no init cost): for counting parameters."""
    with torch.device("meta"):
        return build_network(config)
