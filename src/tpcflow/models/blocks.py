"""Building blocks of the dense UResNet (2D, and 3D with ``[1, k, k]`` kernels).

Every block follows the CosmicTagger master definition (``src/networks/torch/uresnet2D.py``,
summarised in the project's reference spec, section 2.1):

* convolutions use stride 1 and "same" padding ``(k - 1) // 2`` unless stated;
* the convolution bias is present whenever ``bias`` is true, even in front of a BatchNorm
  (it is redundant but needed for the reference parameter count);
* BatchNorm is affine, ``eps=1e-5``, ``momentum=0.1``; LeakyReLU has slope 0.01.

The blocks take a ``dims`` argument: 2 builds ``Conv2d``/``BatchNorm2d`` with ``k x k`` kernels
on ``[B, C, H, W]``; 3 builds ``Conv3d``/``BatchNorm3d`` with ``1 x k x k`` kernels on
``[B, C, P, H, W]`` (the planes ``P`` on the depth axis, never mixed).  Module attribute names are
the same in both so that parameter names line up (``conv``, ``norm``, ``conv1``, ``conv2``...).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "LEAKY_SLOPE",
    "BlockSeries",
    "ConvBNAct",
    "Down",
    "PlainBlock",
    "ResidualBlock",
    "SkipMerge",
    "Up",
    "init_weights",
    "make_conv",
    "make_norm",
]

#: negative slope of every LeakyReLU in the network (CosmicTagger uses the torch default)
LEAKY_SLOPE = 0.01


def make_conv(dims: int, cin: int, cout: int, k: int, *, stride: int = 1, padding: int | None = None,
              bias: bool = True) -> nn.Module:
    """Return a 2D ``k x k`` or 3D ``1 x k x k`` convolution with "same" padding by default."""
    pad = (k - 1) // 2 if padding is None else padding
    if dims == 2:
        return nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=bias)
    return nn.Conv3d(cin, cout, (1, k, k), stride=(1, stride, stride), padding=(0, pad, pad), bias=bias)


def make_norm(dims: int, c: int, normalization: str) -> nn.Module:
    """Return ``BatchNorm{2,3}d(c)`` for ``normalization="batch"``, else an identity."""
    if normalization == "batch":
        return nn.BatchNorm2d(c) if dims == 2 else nn.BatchNorm3d(c)
    return nn.Identity()


class ConvBNAct(nn.Module):
    """Conv -> BatchNorm -> LeakyReLU(0.01).

    Parameters
    ----------
    cin, cout : int
        Input and output channels.
    k : int
        Kernel size (``k x k`` in 2D, ``1 x k x k`` in 3D).
    stride : int
        Spatial stride (2 for the convolutional down-sampling).
    padding : int or None
        Spatial padding; ``None`` means ``(k - 1) // 2``.
    bias : bool
        Conv bias (kept even before BatchNorm, as the reference does).
    normalization : {"batch", "none"}
        Whether a BatchNorm follows the convolution.
    dims : {2, 3}
        Dense 2D or 3D-with-planes-on-depth.
    """

    def __init__(self, cin: int, cout: int, k: int, *, stride: int = 1, padding: int | None = None,
                 bias: bool = True, normalization: str = "batch", dims: int = 2):
        super().__init__()
        self.conv = make_conv(dims, cin, cout, k, stride=stride, padding=padding, bias=bias)
        self.norm = make_norm(dims, cout, normalization)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class PlainBlock(nn.Module):
    """One :class:`ConvBNAct` ``c -> c`` (the non-residual block)."""

    def __init__(self, c: int, k: int, *, bias: bool, normalization: str, dims: int):
        super().__init__()
        self.conv1 = ConvBNAct(c, c, k, bias=bias, normalization=normalization, dims=dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(x)


class ResidualBlock(nn.Module):
    """ConvBNAct -> Conv -> BN -> add the input (identity shortcut) -> LeakyReLU."""

    def __init__(self, c: int, k: int, *, bias: bool, normalization: str, dims: int):
        super().__init__()
        self.conv1 = ConvBNAct(c, c, k, bias=bias, normalization=normalization, dims=dims)
        self.conv2 = make_conv(dims, c, c, k, bias=bias)
        self.norm2 = make_norm(dims, c, normalization)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm2(self.conv2(self.conv1(x)))
        return F.leaky_relu(y + x, LEAKY_SLOPE)


class BlockSeries(nn.Module):
    """``n`` residual (or plain) blocks keeping ``c`` channels; ``n = 0`` is the identity."""

    def __init__(self, c: int, n: int, k: int, *, residual: bool, bias: bool, normalization: str,
                 dims: int):
        super().__init__()
        block = ResidualBlock if residual else PlainBlock
        self.blocks = nn.Sequential(
            *[block(c, k, bias=bias, normalization=normalization, dims=dims) for _ in range(n)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class Down(nn.Module):
    """Halve the resolution: 2x2 max-pool + 1x1 ConvBNAct, or a 2x2 stride-2 ConvBNAct.

    ``mode`` is ``"max_pooling"`` (reference default) or ``"convolutional"``.
    """

    def __init__(self, cin: int, cout: int, *, mode: str, bias: bool, normalization: str, dims: int):
        super().__init__()
        self.mode = mode
        self.dims = dims
        if mode == "max_pooling":
            self.block = ConvBNAct(cin, cout, 1, bias=bias, normalization=normalization, dims=dims)
        else:
            self.block = ConvBNAct(cin, cout, 2, stride=2, padding=0, bias=bias,
                                   normalization=normalization, dims=dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "max_pooling":
            x = F.max_pool2d(x, 2) if self.dims == 2 else F.max_pool3d(x, (1, 2, 2))
        return self.block(x)


class Up(nn.Module):
    """Double the resolution: bilinear x2 + 1x1 ConvBNAct, or ConvTranspose 2x2 + BN + LeakyReLU.

    ``mode`` is ``"interpolation"`` (reference default, ``align_corners=False``) or
    ``"convolutional"``.
    """

    def __init__(self, cin: int, cout: int, *, mode: str, bias: bool, normalization: str, dims: int):
        super().__init__()
        self.mode = mode
        self.dims = dims
        if mode == "interpolation":
            self.block = ConvBNAct(cin, cout, 1, bias=bias, normalization=normalization, dims=dims)
        else:
            if dims == 2:
                conv = nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=bias)
            else:
                conv = nn.ConvTranspose3d(cin, cout, (1, 2, 2), stride=(1, 2, 2), bias=bias)
            self.block = nn.Sequential()
            self.block.add_module("conv", conv)
            self.block.add_module("norm", make_norm(dims, cout, normalization))
            self.block.add_module("act", nn.LeakyReLU(LEAKY_SLOPE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "interpolation":
            if self.dims == 2:
                x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            else:
                b, c, p, h, w = x.shape
                x2 = x.transpose(1, 2).reshape(b * p, c, h, w)
                x2 = F.interpolate(x2, scale_factor=2.0, mode="bilinear", align_corners=False)
                x = x2.reshape(b, p, c, 2 * h, 2 * w).transpose(1, 2)
        return self.block(x)


class SkipMerge(nn.Module):
    """Merge the up-sampled tensor with the skip tensor of the same level.

    ``"concat"``: ``cat([up, skip])`` then a 1x1 ConvBNAct ``2c -> c``; ``"sum"``: ``up + skip``;
    ``"none"``: ``up`` alone.
    """

    def __init__(self, c: int, *, mode: str, bias: bool, normalization: str, dims: int):
        super().__init__()
        self.mode = mode
        if mode == "concat":
            self.block = ConvBNAct(2 * c, c, 1, bias=bias, normalization=normalization, dims=dims)

    def forward(self, up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.mode == "concat":
            return self.block(torch.cat([up, skip], dim=1))
        if self.mode == "sum":
            return up + skip
        return up


def init_weights(module: nn.Module) -> None:
    """Xavier-uniform weights (gain 1) and zero bias on every Conv2d/Conv3d, as CosmicTagger does.

    Transposed convolutions keep PyTorch's default initialisation, like the reference (its
    initialisation loop only visits ``nn.Conv2d``).  BatchNorm keeps gamma=1, beta=0.
    Sparse convolutions (:mod:`tpcflow.models.sparse`) follow the same rule.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)) or getattr(m, "xavier_init", False):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
