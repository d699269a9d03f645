"""The network configuration: a frozen dataclass named field-for-field like CosmicTagger's.

Source: CosmicTagger master ``src/config/network.py`` (dataclasses ``Network``, ``UResNet``,
``A21``, ``Polaris``); values in the project's reference spec, section 1.  This module imports no
torch so that configuration code may use it cheaply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from tpcflow.errors import ConfigError, closest

__all__ = ["CHOICES", "PRESETS", "NetworkConfig", "get_preset", "network_config_from_dict"]

#: allowed values of the string fields
CHOICES: dict[str, tuple[str, ...]] = {
    "connections": ("concat", "sum", "none"),
    "upsampling": ("interpolation", "convolutional"),
    "downsampling": ("max_pooling", "convolutional"),
    "growth_rate": ("additive", "multiplicative"),
    "normalization": ("batch", "none"),
    "conv_mode": ("2D", "3D", "sparse"),
}


@dataclass(frozen=True, kw_only=True)
class NetworkConfig:
    """Hyper-parameters of a UResNet; the defaults are CosmicTagger's ``uresnet`` preset.

    Parameters
    ----------
    name : str
        Preset name, informative only.
    n_initial_filters : int
        Channels after the stem (``n0``).
    network_depth : int
        Number of 2x down-samplings; H and W must be divisible by ``2**network_depth``.
    blocks_per_layer : int
        Blocks per encoder level, and again per decoder level.
    blocks_deepest_layer : int
        Blocks in the cross-plane deepest layer.
    blocks_final : int
        Blocks after the decoder, before the classifier.
    filter_size_deepest : int
        Kernel size of the deepest blocks.
    bottleneck_deepest : int
        Channels of the deepest layer after the 1x1 squeeze of the concatenated planes.
    residual : bool
        Residual blocks (else plain ConvBNAct blocks).
    connections : {"concat", "sum", "none"}
        How the decoder merges the skip tensor.
    upsampling : {"interpolation", "convolutional"}
        Bilinear x2 + 1x1 block, or a 2x2 transposed convolution.
    downsampling : {"max_pooling", "convolutional"}
        2x2 max-pool + 1x1 block, or a 2x2 stride-2 convolution.
    growth_rate : {"additive", "multiplicative"}
        Channels per level ``n0 * (l + 1)`` or ``n0 * 2**l``.
    normalization : {"batch", "none"}
        BatchNorm after each convolution, or none.
    bias : bool
        Convolution biases (kept before BatchNorm, as the reference does).
    conv_mode : {"2D", "3D", "sparse"}
        Dense 2D (reference), dense 3D with ``[1, k, k]`` kernels, or submanifold sparse.
    n_classes : int
        Output classes (0 background, 1 cosmic, 2 neutrino).
    n_planes : int
        Wire planes; the deepest layer concatenates them.
    stack_planes : bool
        Run the shared per-plane layers once on the planes stacked in the batch dimension
        (same parameters, faster).  In train mode BatchNorm then normalises over all planes
        together instead of once per plane, and the running statistics are updated once per
        forward instead of three times; eval-mode outputs are identical.
    """

    name: str = "uresnet"
    n_initial_filters: int = 16
    network_depth: int = 6
    blocks_per_layer: int = 2
    blocks_deepest_layer: int = 5
    blocks_final: int = 5
    filter_size_deepest: int = 5
    bottleneck_deepest: int = 256
    residual: bool = True
    connections: str = "concat"
    upsampling: str = "interpolation"
    downsampling: str = "max_pooling"
    growth_rate: str = "additive"
    normalization: str = "batch"
    bias: bool = True
    conv_mode: str = "2D"
    n_classes: int = 3
    n_planes: int = 3
    stack_planes: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            expected = bool if f.type in ("bool", bool) else int if f.type in ("int", int) else str
            ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
            if not ok:
                raise ConfigError(
                    f"network.{f.name}: {value!r} is not a {expected.__name__}"
                )
        for key, allowed in CHOICES.items():
            value = getattr(self, key)
            if value not in allowed:
                raise ConfigError(f"network.{key}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        minimum = {"n_initial_filters": 1, "network_depth": 1, "blocks_per_layer": 0, "blocks_deepest_layer": 0,
                   "blocks_final": 0, "filter_size_deepest": 1, "bottleneck_deepest": 1, "n_classes": 2,
                   "n_planes": 1}
        for key, low in minimum.items():
            if getattr(self, key) < low:
                raise ConfigError(f"network.{key}: {getattr(self, key)!r} must be >= {low}")
        if self.filter_size_deepest % 2 == 0:
            raise ConfigError(
                f"network.filter_size_deepest: {self.filter_size_deepest!r} must be odd ('same' padding)"
            )

    def channels(self, level: int) -> int:
        """Channels at encoder ``level`` (``level == network_depth`` is the deepest level)."""
        n0 = self.n_initial_filters
        return n0 * (level + 1) if self.growth_rate == "additive" else n0 * 2**level

    def replace(self, **changes: Any) -> "NetworkConfig":
        """Return a copy with ``changes`` applied (unknown keys raise :class:`ConfigError`)."""
        return network_config_from_dict({**asdict(self), **changes})

    def to_dict(self) -> dict[str, Any]:
        """``dataclasses.asdict`` of this config (what checkpoints store under ``"network"``)."""
        return asdict(self)


def network_config_from_dict(data: Mapping[str, Any]) -> NetworkConfig:
    """Build a :class:`NetworkConfig` from a mapping; unknown keys raise :class:`ConfigError`.

    Raises
    ------
    ConfigError
        If a key is not a field (the message lists the closest field names) or a value is invalid.
    """
    names = [f.name for f in fields(NetworkConfig)]
    for key in data:
        if key not in names:
            raise ConfigError(
                f"network.{key}: unknown network field\nAvailable: {', '.join(closest(str(key), names))}"
            )
    return NetworkConfig(**dict(data))


#: CosmicTagger's presets (reference spec, section 1)
PRESETS: dict[str, NetworkConfig] = {
    "uresnet": NetworkConfig(),
    "a21": NetworkConfig(
        name="a21", n_initial_filters=8, residual=False, connections="sum", blocks_final=0,
    ),
    "polaris": NetworkConfig(
        name="polaris", network_depth=7, blocks_deepest_layer=2, blocks_final=2, bottleneck_deepest=96,
        residual=False, connections="sum",
    ),
}


def get_preset(name: str) -> NetworkConfig:
    """Return the preset ``name`` ("uresnet", "a21", "polaris").

    Raises
    ------
    ConfigError
        If the name is unknown; the message lists the presets.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"network: unknown preset {name!r}\nAvailable: {', '.join(closest(name, PRESETS))}") from None
