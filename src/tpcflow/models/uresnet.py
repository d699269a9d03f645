"""CosmicTagger's dense 2D UResNet (master branch, PyTorch), reproduced module for module.

Source: CosmicTagger master ``src/networks/torch/uresnet2D.py`` at commit 156c480; the
project's reference spec (sections 2 and 3) lists every stage and its parameter count.  With
the default :class:`~tpcflow.config.network.NetworkConfig` the network has 18,382,131
parameters, like the reference.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from tpcflow.config.network import NetworkConfig
from tpcflow.errors import ConfigError
from tpcflow.models.blocks import BlockSeries, ConvBNAct, Down, SkipMerge, Up, init_weights

__all__ = ["Deepest", "UResNet", "UResNetCore", "check_image_shape"]


def check_image_shape(shape: tuple[int, ...], config: NetworkConfig) -> None:
    """Raise :class:`ConfigError` unless an input ``[B, P, H, W]`` (or ``[B, C, P, H, W]``) fits.

    ``P`` must equal ``config.n_planes`` and H, W must be divisible by ``2**network_depth``.
    The message says which sizes and depths would work.
    """
    if len(shape) not in (4, 5) or shape[-3] != config.n_planes:
        raise ConfigError(
            f"network input: shape {tuple(shape)} is not [B, {config.n_planes}, H, W] "
            f"(planes on axis 1; network.n_planes={config.n_planes})"
        )
    h, w = int(shape[-2]), int(shape[-1])
    depth = config.network_depth
    m = 2**depth
    if h % m == 0 and w % m == 0 and h > 0 and w > 0:
        return
    usable = 0
    while h % 2 ** (usable + 1) == 0 and w % 2 ** (usable + 1) == 0 and usable < 16:
        usable += 1
    lo = f"{max(m, h // m * m)}x{max(m, w // m * m)}"
    hi = f"{-(-h // m) * m}x{-(-w // m) * m}"
    raise ConfigError(
        f"network input: image size {h}x{w} (H x W) cannot be halved network.network_depth={depth} times: "
        f"H and W must be multiples of 2**{depth} = {m}.\n"
        f"Sizes that would work: {lo} or {hi}; with {h}x{w} the deepest usable network.network_depth is "
        f"{usable}; or raise data.downsample so that (1280 >> downsample, 2048 >> downsample) stays "
        f"divisible by {m} (downsample + network_depth <= 8 for SBND images)."
    )


class Deepest(nn.Module):
    """The cross-plane deepest layer: concat planes -> 1x1 squeeze -> blocks -> 1x1 expand -> split.

    Input and output are ``[B, P * c_d, h, w]`` with the planes concatenated on channels in order
    0, 1, 2 (chunk ``p`` belongs to plane ``p``).  The expand step keeps its BatchNorm and
    LeakyReLU, as in the reference.
    """

    def __init__(self, config: NetworkConfig, dims: int = 2):
        super().__init__()
        cfg = config
        c_in = cfg.n_planes * cfg.channels(cfg.network_depth)
        kw = dict(bias=cfg.bias, normalization=cfg.normalization, dims=dims)
        self.squeeze = ConvBNAct(c_in, cfg.bottleneck_deepest, 1, **kw)
        self.blocks = BlockSeries(cfg.bottleneck_deepest, cfg.blocks_deepest_layer, cfg.filter_size_deepest,
                                  residual=cfg.residual, **kw)
        self.expand = ConvBNAct(cfg.bottleneck_deepest, c_in, 1, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.blocks(self.squeeze(x)))


class EncoderLevel(nn.Module):
    """``blocks_per_layer`` blocks at ``c_l`` channels, then :class:`~tpcflow.models.blocks.Down`."""

    def __init__(self, cin: int, cout: int, config: NetworkConfig, dims: int = 2):
        super().__init__()
        kw = dict(bias=config.bias, normalization=config.normalization, dims=dims)
        self.blocks = BlockSeries(cin, config.blocks_per_layer, 3, residual=config.residual, **kw)
        self.down = Down(cin, cout, mode=config.downsampling, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.blocks(x))


class DecoderLevel(nn.Module):
    """Up (``c_{l+1} -> c_l``) -> merge with the skip tensor -> ``blocks_per_layer`` blocks."""

    def __init__(self, cin: int, cout: int, config: NetworkConfig, dims: int = 2):
        super().__init__()
        kw = dict(bias=config.bias, normalization=config.normalization, dims=dims)
        self.up = Up(cin, cout, mode=config.upsampling, **kw)
        self.merge = SkipMerge(cout, mode=config.connections, **kw)
        self.blocks = BlockSeries(cout, config.blocks_per_layer, 3, residual=config.residual, **kw)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.merge(self.up(x), skip))


class UResNetCore(nn.Module):
    """The stages the dense 2D and 3D UResNets share: stem, encoder levels, deepest level, decoder
    levels, final blocks and the 1x1 classifier, in ``dims`` dimensions.

    Subclasses set ``conv_mode`` and ``dims``, build their deepest level in :meth:`make_deepest`
    and define ``forward``.  The stages are built in the reference's order, so that the parameter
    names (and the random initialisation for a given seed) do not depend on the subclass.
    """

    conv_mode = "2D"
    dims = 2

    def __init__(self, config: NetworkConfig):
        super().__init__()
        if config.conv_mode != self.conv_mode:
            raise ConfigError(f"network.conv_mode: {config.conv_mode!r} is not {self.conv_mode!r} (use build_network)")
        self.config = config
        self.activation_checkpointing = False
        cfg, dims = config, self.dims
        kw = dict(bias=cfg.bias, normalization=cfg.normalization, dims=dims)
        depth = cfg.network_depth
        self.stem = ConvBNAct(1, cfg.n_initial_filters, 5, **kw)
        self.encoders = nn.ModuleList(
            [EncoderLevel(cfg.channels(lv), cfg.channels(lv + 1), cfg, dims=dims) for lv in range(depth)]
        )
        self.deepest = self.make_deepest(cfg)
        self.decoders = nn.ModuleList(
            [DecoderLevel(cfg.channels(lv + 1), cfg.channels(lv), cfg, dims=dims) for lv in range(depth)]
        )
        self.final = BlockSeries(cfg.n_initial_filters, cfg.blocks_final, 3, residual=cfg.residual, **kw)
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.classifier = conv(cfg.n_initial_filters, cfg.n_classes, 1, bias=cfg.bias)
        init_weights(self)

    def make_deepest(self, config: NetworkConfig) -> nn.Module:
        raise NotImplementedError

    # -- stages ---------------------------------------------------------------------------
    def _run(self, module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(module, *args, use_reentrant=False)
        return module(*args)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Stem and encoder for one plane (or stacked planes) ``[N, 1, H, W]``."""
        x = self.stem(x)
        skips = []
        for level in self.encoders:
            skips.append(x)
            x = self._run(level, x)
        return x, skips

    def decode(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """Decoder, final blocks and classifier for one plane (or stacked planes)."""
        for lv in reversed(range(len(self.decoders))):
            x = self._run(self.decoders[lv], x, skips[lv])
        return self.classifier(self._run(self.final, x))


class UResNet(UResNetCore):
    """Dense 2D UResNet with weights shared across the wire planes (a Siamese U-Net).

    Parameters
    ----------
    config : NetworkConfig
        ``conv_mode`` must be ``"2D"``.

    Notes
    -----
    ``forward(x)`` takes ``x`` float ``[B, P, H, W]`` (P = ``n_planes`` = 3, the planes on the
    channel axis, CosmicTagger layout) and returns **one logits tensor** ``[B, n_classes, P, H, W]``
    (raw logits; softmax is applied only in the loss and metrics): the contract of
    :mod:`tpcflow.models.logits`.  The reference returns the same values as a tuple of P tensors
    ``[B, n_classes, H, W]`` (``out.unbind(2)``).  H and W must be divisible by ``2**network_depth``; otherwise
    :class:`~tpcflow.errors.ConfigError` says which sizes would work.

    Every module except :class:`Deepest` is applied to each plane separately (BatchNorm
    statistics per plane call, running statistics updated P times per forward), like the
    reference.  With ``config.stack_planes`` the planes are instead stacked in the batch
    dimension and each shared module runs once: the parameters and the eval-mode outputs are
    identical; only train-mode BatchNorm statistics differ (pooled over the planes).

    ``channels_last`` works: convert the model and the input with
    ``.to(memory_format=torch.channels_last)``.  Setting ``model.activation_checkpointing = True``
    recomputes each encoder/decoder level in backward to save memory (BatchNorm running
    statistics are then updated twice per level and step).
    """

    conv_mode = "2D"
    dims = 2

    def make_deepest(self, config: NetworkConfig) -> nn.Module:
        return Deepest(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing():
            check_image_shape(tuple(x.shape), self.config)
        n_planes = self.config.n_planes
        if self.config.stack_planes:
            b, p, h, w = x.shape
            feats, skips = self.encode(x.reshape(b * p, 1, h, w))
            _, c, hd, wd = feats.shape
            deep = self.deepest(feats.reshape(b, p * c, hd, wd)).reshape(b * p, c, hd, wd)
            out = self.decode(deep, skips)
            return out.reshape(b, p, *out.shape[1:]).transpose(1, 2)
        encoded = [self.encode(x[:, p : p + 1]) for p in range(n_planes)]
        deep = self.deepest(torch.cat([e[0] for e in encoded], dim=1))
        chunks = torch.chunk(deep, n_planes, dim=1)
        return torch.stack([self.decode(chunks[p], encoded[p][1]) for p in range(n_planes)], dim=2)
