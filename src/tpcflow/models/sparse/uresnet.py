"""Sparse UResNet: the CosmicTagger topology on the charged pixels only.

Like CosmicTagger's sparse PyTorch model (README, seed 002), the encoder and decoder are sparse
(submanifold) and the deepest, cross-plane layer runs dense: the active sites of the deepest level
are scattered into a small dense grid ``[B, P * c_d, H / 2**depth, W / 2**depth]``, the dense
:class:`~tpcflow.models.uresnet.Deepest` layer mixes the planes there, and its output is read back
at the active sites.  The planes share every weight; they are processed together as ``B * P``
sparse images (BatchNorm statistics pooled over the planes, as in the dense ``stack_planes`` mode).

Parameter names and shapes equal the dense 2D network's for the same
:class:`~tpcflow.config.network.NetworkConfig`, so the parameter count is the same and
checkpoints can be exchanged (the functions differ: see :mod:`tpcflow.models.sparse.layers`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tpcflow.config.network import NetworkConfig
from tpcflow.errors import ConfigError
from tpcflow.models.blocks import init_weights
from tpcflow.models.sparse.layers import (
    SparseBlockSeries,
    SparseConvBNAct,
    SparseDown,
    SparseSkipMerge,
    SparseUp,
    SubMConv,
)
from tpcflow.models.sparse.ops import SparseGeometry
from tpcflow.models.uresnet import Deepest, check_image_shape

__all__ = ["BACKGROUND_LOGIT_GAP", "SparseUResNet", "background_logits", "sparsify", "to_dense"]

#: logit margin given to background at inactive pixels when the output is densified
BACKGROUND_LOGIT_GAP = 1.0e4


def background_logits(n_classes: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Logits ``[n_classes]`` that predict background with probability 1: ``(0, -1e4, -1e4...)``."""
    out = torch.full((n_classes,), -BACKGROUND_LOGIT_GAP, device=device, dtype=dtype)
    out[0] = 0.0
    return out


def sparsify(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Active sites of a dense batch ``[B, P, H, W]``: pixels whose value is not 0.

    Returns
    -------
    coords : (N, 3) int64
        ``(b * P + p, y, x)``, sorted by linear key.
    feats : (N, 1)
        The pixel values.
    """
    b, p, h, w = x.shape
    flat = x.reshape(b * p, h, w)
    coords = torch.nonzero(flat)
    feats = flat[coords[:, 0], coords[:, 1], coords[:, 2]][:, None]
    return coords, feats


def to_dense(coords: torch.Tensor, values: torch.Tensor, batch_size: int, shape: tuple[int, int],
             fill: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Scatter per-site values into a dense ``[batch_size, C, H, W]`` tensor (differentiable).

    Parameters
    ----------
    coords : (N, 3) int64
        ``(b, y, x)`` per site.
    values : (N, C)
        Values per site (e.g. logits).
    batch_size : int
        B.
    shape : (int, int)
        ``(H, W)``.
    fill : Tensor (C,) or float
        Value of the inactive pixels; use :func:`background_logits` for logits that the dense
        loss and metrics read as "background".
    """
    h, w = shape
    c = values.shape[1]
    base = torch.empty(batch_size * h * w, c, device=values.device, dtype=values.dtype)
    base[:] = fill if not isinstance(fill, torch.Tensor) else fill.to(base)
    keys = (coords[:, 0] * h + coords[:, 1]) * w + coords[:, 2]
    out = base.index_put((keys,), values)
    return out.reshape(batch_size, h, w, c).permute(0, 3, 1, 2)


class SparseEncoderLevel(nn.Module):
    def __init__(self, cin: int, cout: int, config: NetworkConfig):
        super().__init__()
        kw = dict(bias=config.bias, normalization=config.normalization)
        self.blocks = SparseBlockSeries(cin, config.blocks_per_layer, 3, residual=config.residual, **kw)
        self.down = SparseDown(cin, cout, mode=config.downsampling, **kw)


class SparseDecoderLevel(nn.Module):
    def __init__(self, cin: int, cout: int, config: NetworkConfig):
        super().__init__()
        kw = dict(bias=config.bias, normalization=config.normalization)
        self.up = SparseUp(cin, cout, mode=config.upsampling, **kw)
        self.merge = SparseSkipMerge(cout, mode=config.connections, **kw)
        self.blocks = SparseBlockSeries(cout, config.blocks_per_layer, 3, residual=config.residual, **kw)


class SparseUResNet(nn.Module):
    """Submanifold-sparse UResNet (pure torch; CPU and GPU, forward and backward).

    Parameters
    ----------
    config : NetworkConfig
        ``conv_mode`` must be ``"sparse"``.

    Notes
    -----
    Two ways to call it:

    * ``forward(x)`` with a dense ``[B, P, H, W]`` image: the non-zero pixels are the active
      sites; the result is one dense logits tensor ``[B, n_classes, P, H, W]`` (a drop-in for
      the dense network, :mod:`tpcflow.models.logits`), with :func:`background_logits` at
      inactive pixels, so that the dense loss and metrics apply unchanged.
    * :meth:`forward_sparse` with per-plane ``(coords, features)``: per-voxel logits only
      (the fast path for training: no dense tensor at full resolution).
    """

    def __init__(self, config: NetworkConfig):
        super().__init__()
        if config.conv_mode != "sparse":
            raise ConfigError(f"network.conv_mode: {config.conv_mode!r} is not 'sparse' (use build_network)")
        self.config = config
        cfg = config
        kw = dict(bias=cfg.bias, normalization=cfg.normalization)
        depth = cfg.network_depth
        self.stem = SparseConvBNAct(1, cfg.n_initial_filters, 5, **kw)
        self.encoders = nn.ModuleList(
            [SparseEncoderLevel(cfg.channels(lv), cfg.channels(lv + 1), cfg) for lv in range(depth)]
        )
        self.deepest = Deepest(cfg)
        self.decoders = nn.ModuleList(
            [SparseDecoderLevel(cfg.channels(lv + 1), cfg.channels(lv), cfg) for lv in range(depth)]
        )
        self.final = SparseBlockSeries(cfg.n_initial_filters, cfg.blocks_final, 3, residual=cfg.residual, **kw)
        self.classifier = SubMConv(cfg.n_initial_filters, cfg.n_classes, 1, bias=cfg.bias)
        init_weights(self)

    def _deepest_dense(self, feats: torch.Tensor, geo: SparseGeometry) -> torch.Tensor:
        planes = self.config.n_planes
        batch = geo.n_images // planes
        h, w = geo.shape
        c = feats.shape[1]
        grid = feats.new_zeros(geo.n_images * h * w, c).index_put((geo.keys,), feats)
        dense = grid.reshape(batch, planes, h, w, c).permute(0, 1, 4, 2, 3).reshape(batch, planes * c, h, w)
        out = self.deepest(dense)
        back = out.reshape(batch, planes, c, h, w).permute(0, 1, 3, 4, 2).reshape(-1, c)
        return back[geo.keys]

    def run(self, feats: torch.Tensor, geometry: SparseGeometry) -> torch.Tensor:
        """Logits ``[N, n_classes]`` at the sites of ``geometry`` (``B * P`` images, sorted sites)."""
        x = self.stem(feats, geometry)
        skips, geos = [], []
        geo = geometry
        for level in self.encoders:
            skips.append(x)
            geos.append(geo)
            x, geo = level.down(level.blocks(x, geo), geo)
        x = self._deepest_dense(x, geo)
        for lv in reversed(range(len(self.decoders))):
            dec = self.decoders[lv]
            x = dec.up(x, geos[lv])
            x = dec.blocks(dec.merge(x, skips[lv], geos[lv]), geos[lv])
        return self.classifier(self.final(x, geometry), geometry)

    def forward_sparse(self, planes: Sequence[tuple[torch.Tensor, torch.Tensor]], batch_size: int,
                       shape: tuple[int, int]) -> list[torch.Tensor]:
        """Per-voxel logits from per-plane sparse inputs.

        Parameters
        ----------
        planes : sequence of (coords, features)
            One pair per plane: ``coords`` ``(N_p, 3)`` int ``(batch index, y, x)`` in any order,
            without duplicates; ``features`` ``(N_p, 1)`` float (the charge).
        batch_size : int
            B (batch indices are in ``[0, B)``).
        shape : (int, int)
            ``(H, W)``, divisible by ``2**network_depth``.

        Returns
        -------
        list of Tensor
            P tensors ``(N_p, n_classes)`` of logits, in the input order of each plane.

        Raises
        ------
        ConfigError
            If the plane count or the image size does not fit the network.
        ValueError
            If coordinates are out of range or duplicated.
        """
        n_planes = self.config.n_planes
        if len(planes) != n_planes:
            raise ConfigError(f"network input: {len(planes)} planes given, network.n_planes={n_planes}")
        h, w = shape
        check_image_shape((batch_size, n_planes, h, w), self.config)
        all_coords, all_feats, sizes = [], [], []
        for p, (coords, feats) in enumerate(planes):
            coords = coords.long()
            if coords.numel() and (coords.min() < 0 or coords[:, 0].max() >= batch_size
                                   or coords[:, 1].max() >= h or coords[:, 2].max() >= w):
                raise ValueError(f"plane {p}: coordinates out of range for batch {batch_size} and shape {h}x{w}")
            image = coords[:, 0] * n_planes + p
            all_coords.append(torch.stack([image, coords[:, 1], coords[:, 2]], dim=1))
            all_feats.append(feats.reshape(-1, 1))
            sizes.append(coords.shape[0])
        coords = torch.cat(all_coords)
        feats = torch.cat(all_feats)
        keys = (coords[:, 0] * h + coords[:, 1]) * w + coords[:, 2]
        order = torch.argsort(keys)
        sorted_keys = keys[order]
        if sorted_keys.numel() > 1 and bool((sorted_keys[1:] == sorted_keys[:-1]).any()):
            raise ValueError("duplicate voxel coordinates in the sparse input")
        geo = SparseGeometry(coords[order], (h, w), batch_size * n_planes)
        logits_sorted = self.run(feats[order], geo)
        logits = torch.empty_like(logits_sorted).index_put((order,), logits_sorted)
        return list(torch.split(logits, sizes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_shape(tuple(x.shape), self.config)
        b, p, h, w = x.shape
        coords, feats = sparsify(x)
        geo = SparseGeometry(coords, (h, w), b * p)
        logits = self.run(feats, geo)
        fill = background_logits(self.config.n_classes, device=x.device, dtype=logits.dtype)
        dense = to_dense(coords, logits, b * p, (h, w), fill)  # [B * P, C, H, W]
        return dense.reshape(b, p, *dense.shape[1:]).transpose(1, 2)
