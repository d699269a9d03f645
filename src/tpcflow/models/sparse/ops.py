"""Pure-torch submanifold sparse convolution on 2D images: geometry, neighbour maps, kernels.

A sparse image is a set of active sites ``coords`` ``[N, 3]`` int64 ``(image, y, x)`` with
features ``[N, C]``.  Sites are kept sorted by their linear key ``(image * H + y) * W + x``, so a
neighbour is found by ``torch.searchsorted`` on the keys (no hash table).  A submanifold
convolution computes outputs only at the active sites and reads only active inputs (inactive
sites count as zero): for a site ``i`` and kernel offset ``k``, ``nbr[i, k]`` is the row of the
neighbour or ``N`` (a zero padding row).  The forward pass gathers ``[N, K * Cin]`` and does one
matrix product; the backward pass uses the same map (the transpose of a submanifold map is the
map of the flipped kernel), so it is also gather + matmul, with no scatter.

Everything is plain torch (searchsorted, indexing, matmul): it runs on CPU and GPU and supports
autograd.  Sources: Graham & van der Maaten, "Submanifold Sparse Convolutional Networks" (2017),
for the operator; the gather-GEMM formulation is the one of spconv / MinkowskiEngine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["PoolMap", "SparseGeometry", "submanifold_conv"]


@dataclass(eq=False)
class PoolMap:
    """How the sites of a level map onto the next (2x coarser) level.

    parent : (N,) int64
        Row of the coarse site containing each fine site.
    slot : (N,) int64
        Position of the fine site in its 2x2 block, ``(y % 2) * 2 + x % 2``.
    children : (N', 4) int64
        Fine row of each slot of each coarse site, or ``N`` where the slot is inactive.
    """

    parent: torch.Tensor
    slot: torch.Tensor
    children: torch.Tensor


@dataclass(eq=False)
class SparseGeometry:
    """Active sites of a batch of sparse images at one resolution.

    Parameters
    ----------
    coords : (N, 3) int64
        ``(image, y, x)`` of each active site, sorted by linear key, without duplicates.
    shape : (int, int)
        Image size ``(H, W)``.
    n_images : int
        Number of images (batch entries times planes).
    """

    coords: torch.Tensor
    shape: tuple[int, int]
    n_images: int
    keys: torch.Tensor = field(init=False)
    _neighbours: dict = field(init=False, default_factory=dict)
    _pool: "tuple[SparseGeometry, PoolMap] | None" = field(init=False, default=None)

    def __post_init__(self) -> None:
        h, w = self.shape
        c = self.coords
        self.keys = (c[:, 0] * h + c[:, 1]) * w + c[:, 2]

    @classmethod
    def from_keys(cls, keys: torch.Tensor, shape: tuple[int, int], n_images: int) -> "SparseGeometry":
        """Build from sorted unique linear keys."""
        h, w = shape
        coords = torch.stack([keys // (h * w), (keys // w) % h, keys % w], dim=1)
        return cls(coords, shape, n_images)

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    def neighbours(self, k: int) -> torch.Tensor:
        """``[N, k*k]`` neighbour rows for a ``k x k`` kernel (row-major offsets), ``N`` if absent."""
        if k not in self._neighbours:
            self._neighbours[k] = self._build_neighbours(k)
        return self._neighbours[k]

    def _build_neighbours(self, k: int) -> torch.Tensor:
        r = (k - 1) // 2
        dev = self.coords.device
        h, w = self.shape
        n = len(self)
        d = torch.arange(-r, r + 1, device=dev)
        dy = d.repeat_interleave(k)  # row-major over (ky, kx)
        dx = d.repeat(k)
        y = self.coords[:, 1:2] + dy
        x = self.coords[:, 2:3] + dx
        valid = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        query = self.keys[:, None] + dy * w + dx
        if n == 0:
            return torch.zeros((0, k * k), dtype=torch.long, device=dev)
        pos = torch.searchsorted(self.keys, query).clamp_(max=n - 1)
        found = valid & (self.keys[pos] == query)
        return torch.where(found, pos, torch.full_like(pos, n))

    def coarsen(self) -> "tuple[SparseGeometry, PoolMap]":
        """The 2x coarser geometry (a coarse site is active if any of its 4 children is) and the map."""
        if self._pool is None:
            h, w = self.shape
            if h % 2 or w % 2:
                raise ValueError(f"cannot halve a sparse image of size {h}x{w}: H and W must be even")
            h2, w2 = h // 2, w // 2
            c = self.coords
            ckeys = (c[:, 0] * h2 + c[:, 1] // 2) * w2 + c[:, 2] // 2
            uniq, parent = torch.unique(ckeys, sorted=True, return_inverse=True)
            slot = (c[:, 1] % 2) * 2 + c[:, 2] % 2
            n = len(self)
            children = torch.full((uniq.shape[0], 4), n, dtype=torch.long, device=c.device)
            children[parent, slot] = torch.arange(n, device=c.device)
            self._pool = (SparseGeometry.from_keys(uniq, (h2, w2), self.n_images), PoolMap(parent, slot, children))
        return self._pool


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    dev = t.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return t.dtype


class _SubMConv(torch.autograd.Function):
    """out[i] = sum_k feats[nbr[i, k]] @ W_k, with a gather-only backward (see module doc)."""

    @staticmethod
    def forward(ctx, feats: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        dt = _compute_dtype(feats)
        cout, cin, kh, kw = weight.shape
        n = feats.shape[0]
        with torch.autocast(feats.device.type, enabled=False):
            f = feats.to(dt)
            w = weight.to(dt).permute(2, 3, 1, 0).reshape(kh * kw * cin, cout)
            padded = torch.cat([f, f.new_zeros(1, cin)])
            out = padded.index_select(0, nbr.reshape(-1)).reshape(n, kh * kw * cin) @ w
        ctx.save_for_backward(feats, nbr, weight)
        ctx.dt = dt
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        feats, nbr, weight = ctx.saved_tensors
        dt = ctx.dt
        cout, cin, kh, kw = weight.shape
        n = feats.shape[0]
        g = grad_out.to(dt)
        grad_feats = grad_weight = None
        with torch.autocast(feats.device.type, enabled=False):
            if ctx.needs_input_grad[0]:
                wflip = weight.to(dt).flip(2, 3).permute(2, 3, 0, 1).reshape(kh * kw * cout, cin)
                gpad = torch.cat([g, g.new_zeros(1, cout)])
                grad_feats = (gpad.index_select(0, nbr.reshape(-1)).reshape(n, kh * kw * cout) @ wflip).to(feats.dtype)
            if ctx.needs_input_grad[2]:
                f = feats.to(dt)
                padded = torch.cat([f, f.new_zeros(1, cin)])
                cols = padded.index_select(0, nbr.reshape(-1)).reshape(n, kh * kw * cin)
                gw = cols.t() @ g  # [K*cin, cout]
                grad_weight = gw.reshape(kh, kw, cin, cout).permute(3, 2, 0, 1).to(weight.dtype)
        return grad_feats, None, grad_weight


def submanifold_conv(feats: torch.Tensor, geometry: SparseGeometry, weight: torch.Tensor,
                     bias: torch.Tensor | None = None) -> torch.Tensor:
    """Submanifold convolution of ``feats`` ``[N, Cin]`` with ``weight`` ``[Cout, Cin, k, k]``.

    Equals a dense ``conv2d(padding=k // 2)`` of the zero-filled image, read at the active sites
    (the layout of ``weight`` is ``nn.Conv2d``'s, so dense weights can be used unchanged).
    Returns ``[N, Cout]``.
    """
    cout, cin, kh, kw = weight.shape
    if kh == 1 and kw == 1:
        out = torch.nn.functional.linear(feats, weight.reshape(cout, cin))
    else:
        if kh != kw or kh % 2 == 0:
            raise ValueError(f"submanifold kernels must be square and odd, but got {kh}x{kw}")
        out = _SubMConv.apply(feats, geometry.neighbours(kh), weight)
    if bias is not None:
        out = out + bias.to(out.dtype)
    return out
