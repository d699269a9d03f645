"""Sparse counterparts of :mod:`tpcflow.models.blocks`, with the same parameter names and shapes.

Every module takes ``(feats [N, C], geometry)``.  Convolution weights use the dense layouts
(``nn.Conv2d``: ``[Cout, Cin, k, k]``; ``nn.ConvTranspose2d``: ``[Cin, Cout, 2, 2]``) and
BatchNorm is ``BatchNorm1d`` over the active sites (same parameters and buffers as
``BatchNorm2d``), so a dense 2D UResNet state dict loads into the sparse network unchanged.

Differences from the dense blocks, by construction of submanifold networks:

* inactive sites are zero and stay inactive: convolutions, BatchNorm statistics and activations
  only see active sites;
* max-pooling takes the maximum over the *active* children of each 2x2 block;
* the "interpolation" up-sampling copies each coarse site to its active children (nearest
  neighbour), instead of bilinear interpolation.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from tpcflow.models.blocks import LEAKY_SLOPE
from tpcflow.models.sparse.ops import PoolMap, SparseGeometry, submanifold_conv

__all__ = [
    "SparseBatchNorm",
    "SparseBlockSeries",
    "SparseConvBNAct",
    "SparseDown",
    "SparseResidualBlock",
    "SparseSkipMerge",
    "SparseUp",
    "SubMConv",
]


class SubMConv(nn.Module):
    """Submanifold ``k x k`` convolution; weight ``[Cout, Cin, k, k]`` like ``nn.Conv2d``."""

    xavier_init = True

    def __init__(self, cin: int, cout: int, k: int, *, bias: bool = True):
        super().__init__()
        self.kernel_size = k
        self.weight = nn.Parameter(torch.empty(cout, cin, k, k))
        self.bias = nn.Parameter(torch.empty(cout)) if bias else None
        nn.init.xavier_uniform_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        cout, cin = self.weight.shape[:2]
        return f"{cin}, {cout}, kernel_size={self.kernel_size}, bias={self.bias is not None}"

    def forward(self, feats: torch.Tensor, geometry: SparseGeometry) -> torch.Tensor:
        return submanifold_conv(feats, geometry, self.weight, self.bias)


class DownConv(nn.Module):
    """2x2 stride-2 convolution over the active children; weight ``[Cout, Cin, 2, 2]``."""

    xavier_init = True

    def __init__(self, cin: int, cout: int, *, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin, 2, 2))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        nn.init.xavier_uniform_(self.weight)

    def forward(self, feats: torch.Tensor, pool: PoolMap) -> torch.Tensor:
        cout, cin = self.weight.shape[:2]
        padded = torch.cat([feats, feats.new_zeros(1, cin)])
        cols = padded.index_select(0, pool.children.reshape(-1)).reshape(-1, 4 * cin)
        out = cols @ self.weight.to(cols.dtype).permute(2, 3, 1, 0).reshape(4 * cin, cout)
        return out if self.bias is None else out + self.bias.to(out.dtype)


class UpConv(nn.Module):
    """2x2 stride-2 transposed convolution onto the active children; weight ``[Cin, Cout, 2, 2]``.

    Initialised like ``nn.ConvTranspose2d`` (the reference does not Xavier-initialise it).
    """

    def __init__(self, cin: int, cout: int, *, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cin, cout, 2, 2))
        self.bias = nn.Parameter(torch.empty(cout)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(cout * 4)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, coarse: torch.Tensor, pool: PoolMap) -> torch.Tensor:
        cin, cout = self.weight.shape[:2]
        w = self.weight.to(coarse.dtype).permute(0, 2, 3, 1).reshape(cin, 4 * cout)
        y = (coarse @ w).reshape(-1, 4, cout)
        out = y[pool.parent, pool.slot]
        return out if self.bias is None else out + self.bias.to(out.dtype)


class SparseBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the active sites ``[N, C]``; same parameters and buffers as ``BatchNorm2d``.

    Numerically the same as ``nn.BatchNorm1d`` (biased variance to normalise, unbiased variance
    in the running estimate, ``momentum`` 0.1), written with ``torch.var_mean`` because the
    native CPU kernel is slow for many rows and few channels.  Statistics are computed in float32.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] > 0:
            var, mean = torch.var_mean(x.float(), dim=0, correction=0)
            if self.track_running_stats:
                with torch.no_grad():
                    n = x.shape[0]
                    m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
                    self.num_batches_tracked.add_(1)
                    self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                    self.running_var.mul_(1 - m).add_(var.detach() * (n / max(n - 1, 1)), alpha=m)
        else:
            mean, var = self.running_mean, self.running_var
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias
        return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype))


def _norm(c: int, normalization: str) -> nn.Module:
    return SparseBatchNorm(c) if normalization == "batch" else nn.Identity()


class SparseConvBNAct(nn.Module):
    """Submanifold conv -> BatchNorm over active sites -> LeakyReLU(0.01)."""

    def __init__(self, cin: int, cout: int, k: int, *, bias: bool, normalization: str):
        super().__init__()
        self.conv = SubMConv(cin, cout, k, bias=bias)
        self.norm = _norm(cout, normalization)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(self, feats: torch.Tensor, geometry: SparseGeometry) -> torch.Tensor:
        return self.act(self.norm(self.conv(feats, geometry)))


class SparsePlainBlock(nn.Module):
    def __init__(self, c: int, k: int, *, bias: bool, normalization: str):
        super().__init__()
        self.conv1 = SparseConvBNAct(c, c, k, bias=bias, normalization=normalization)

    def forward(self, feats: torch.Tensor, geometry: SparseGeometry) -> torch.Tensor:
        return self.conv1(feats, geometry)


class SparseResidualBlock(nn.Module):
    """ConvBNAct -> conv -> BN -> add input -> LeakyReLU, over active sites."""

    def __init__(self, c: int, k: int, *, bias: bool, normalization: str):
        super().__init__()
        self.conv1 = SparseConvBNAct(c, c, k, bias=bias, normalization=normalization)
        self.conv2 = SubMConv(c, c, k, bias=bias)
        self.norm2 = _norm(c, normalization)

    def forward(self, feats: torch.Tensor, geometry: SparseGeometry) -> torch.Tensor:
        y = self.norm2(self.conv2(self.conv1(feats, geometry), geometry))
        return F.leaky_relu(y + feats, LEAKY_SLOPE)


class SparseBlockSeries(nn.Module):
    def __init__(self, c: int, n: int, k: int, *, residual: bool, bias: bool, normalization: str):
        super().__init__()
        block = SparseResidualBlock if residual else SparsePlainBlock
        self.blocks = nn.ModuleList([block(c, k, bias=bias, normalization=normalization) for _ in range(n)])

    def forward(self, feats: torch.Tensor, geometry: SparseGeometry) -> torch.Tensor:
        for block in self.blocks:
            feats = block(feats, geometry)
        return feats


class SparseDown(nn.Module):
    """Max over the active children + 1x1 block, or a 2x2 stride-2 conv block."""

    def __init__(self, cin: int, cout: int, *, mode: str, bias: bool, normalization: str):
        super().__init__()
        self.mode = mode
        if mode == "max_pooling":
            self.block = SparseConvBNAct(cin, cout, 1, bias=bias, normalization=normalization)
        else:
            self.block = nn.Module()
            self.block.conv = DownConv(cin, cout, bias=bias)
            self.block.norm = _norm(cout, normalization)
            self.block.act = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(self, feats: torch.Tensor, fine: SparseGeometry) -> tuple[torch.Tensor, SparseGeometry]:
        coarse, pool = fine.coarsen()
        if self.mode == "max_pooling":
            padded = torch.cat([feats, feats.new_full((1, feats.shape[1]), float("-inf"))])
            pooled = padded.index_select(0, pool.children.reshape(-1)).reshape(-1, 4, feats.shape[1]).max(dim=1).values
            return self.block(pooled, coarse), coarse
        b = self.block
        return b.act(b.norm(b.conv(feats, pool))), coarse


class SparseUp(nn.Module):
    """Copy coarse sites to their active children + 1x1 block, or a transposed 2x2 conv + BN + act."""

    def __init__(self, cin: int, cout: int, *, mode: str, bias: bool, normalization: str):
        super().__init__()
        self.mode = mode
        if mode == "interpolation":
            self.block = SparseConvBNAct(cin, cout, 1, bias=bias, normalization=normalization)
        else:
            self.block = nn.Module()
            self.block.conv = UpConv(cin, cout, bias=bias)
            self.block.norm = _norm(cout, normalization)
            self.block.act = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(self, coarse_feats: torch.Tensor, fine: SparseGeometry) -> torch.Tensor:
        _, pool = fine.coarsen()
        if self.mode == "interpolation":
            return self.block(coarse_feats[pool.parent], fine)
        b = self.block
        return b.act(b.norm(b.conv(coarse_feats, pool)))


class SparseSkipMerge(nn.Module):
    """concat + 1x1 block ``2c -> c``, sum, or none (like :class:`tpcflow.models.blocks.SkipMerge`)."""

    def __init__(self, c: int, *, mode: str, bias: bool, normalization: str):
        super().__init__()
        self.mode = mode
        if mode == "concat":
            self.block = SparseConvBNAct(2 * c, c, 1, bias=bias, normalization=normalization)

    def forward(self, up: torch.Tensor, skip: torch.Tensor, geometry: SparseGeometry) -> torch.Tensor:
        if self.mode == "concat":
            return self.block(torch.cat([up, skip], dim=1), geometry)
        if self.mode == "sum":
            return up + skip
        return up
