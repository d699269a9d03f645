"""Pure-torch submanifold sparse convolution and the sparse UResNet, checked against dense torch."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from tpcflow.errors import ConfigError
from tpcflow.models.registry import PRESETS, NetworkConfig, build_network, count_parameters, meta_network
from tpcflow.models.sparse import SparseGeometry, background_logits, sparsify, submanifold_conv, to_dense
from tpcflow.models.sparse.layers import SparseBatchNorm, SparseDown

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = NetworkConfig(n_initial_filters=4, network_depth=3, blocks_per_layer=1, blocks_deepest_layer=1,
                     blocks_final=1, bottleneck_deepest=8, conv_mode="sparse")


def _sparse_input(b=2, h=12, w=14, c=3, occupancy=0.3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, h, w, generator=g) < occupancy
    coords = mask.nonzero()
    feats = torch.randn(len(coords), c, generator=g, dtype=dtype)
    return coords, feats


def _densify(coords, feats, b, h, w):
    dense = torch.zeros(b, feats.shape[1], h, w, dtype=feats.dtype)
    return dense.index_put((coords[:, 0], slice(None), coords[:, 1], coords[:, 2]), feats) if False else \
        dense.permute(0, 2, 3, 1).index_put((coords[:, 0], coords[:, 1], coords[:, 2]), feats).permute(0, 3, 1, 2)


def _at(dense, coords):
    return dense[coords[:, 0], :, coords[:, 1], coords[:, 2]]


@pytest.mark.parametrize("k", [1, 3, 5])
def test_submanifold_conv_equals_dense_conv_at_active_sites_with_gradients(k):
    b, h, w = 2, 12, 14
    coords, feats = _sparse_input(b, h, w)
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(4, 3, k, k, generator=g, dtype=torch.float64)
    bias = torch.randn(4, generator=g, dtype=torch.float64)
    probe = torch.randn(len(coords), 4, generator=g, dtype=torch.float64)

    fs, ws, bs = (t.clone().requires_grad_() for t in (feats, weight, bias))
    out = submanifold_conv(fs, SparseGeometry(coords, (h, w), b), ws, bs)
    (out * probe).sum().backward()

    fd, wd, bd = (t.clone().requires_grad_() for t in (feats, weight, bias))
    dense_out = _at(F.conv2d(_densify(coords, fd, b, h, w), wd, bd, padding=k // 2), coords)
    (dense_out * probe).sum().backward()

    torch.testing.assert_close(out, dense_out)
    torch.testing.assert_close(fs.grad, fd.grad)
    torch.testing.assert_close(ws.grad, wd.grad)
    torch.testing.assert_close(bs.grad, bd.grad)


def test_submanifold_conv_gradcheck_and_bfloat16_autocast():
    coords, feats = _sparse_input(1, 6, 7, c=2)
    geo = SparseGeometry(coords, (6, 7), 1)
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    feats.requires_grad_()
    assert torch.autograd.gradcheck(lambda f, wt: submanifold_conv(f, geo, wt), (feats, weight))
    f32, w32 = feats.detach().float().requires_grad_(), weight.detach().float().requires_grad_()
    ref = submanifold_conv(f32, geo, w32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = submanifold_conv(f32, geo, w32)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, rtol=0.05, atol=0.05)
    low.float().sum().backward()
    assert f32.grad.dtype == torch.float32 and w32.grad.dtype == torch.float32


def test_geometry_neighbours_and_coarsening():
    coords = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 1], [0, 3, 3], [1, 0, 0]])
    geo = SparseGeometry(coords, (4, 4), 2)
    nbr = geo.neighbours(3)
    n = len(geo)
    # site (0,0,1): left (0,0,0) is row 0, centre is itself (row 1), below (0,1,1) is row 2
    assert nbr[1, 3] == 0 and nbr[1, 4] == 1 and nbr[1, 7] == 2 and nbr[1, 0] == n
    # no neighbour across images or out of the image
    assert (nbr[4] == torch.tensor([n, n, n, n, 4, n, n, n, n])).all()
    coarse, pool = geo.coarsen()
    assert coarse.coords.tolist() == [[0, 0, 0], [0, 1, 1], [1, 0, 0]]
    assert pool.parent.tolist() == [0, 0, 0, 1, 2]
    assert pool.slot.tolist() == [0, 1, 3, 3, 0]
    assert pool.children.tolist() == [[0, 1, n, 2], [n, n, n, 3], [4, n, n, n]]


def test_sparse_max_pool_equals_dense_for_non_negative_features():
    b, h, w = 2, 8, 10
    coords, feats = _sparse_input(b, h, w, c=4, dtype=torch.float32)
    feats = feats.abs()
    down = SparseDown(4, 4, mode="max_pooling", bias=True, normalization="none")
    with torch.no_grad():
        down.block.conv.weight.copy_(torch.eye(4)[:, :, None, None])
        down.block.conv.bias.zero_()
    geo = SparseGeometry(coords, (h, w), b)
    pooled, coarse = down(feats, geo)
    dense = F.leaky_relu(F.max_pool2d(_densify(coords, feats, b, h, w), 2), 0.01)
    torch.testing.assert_close(pooled, _at(dense, coarse.coords))


def test_sparse_batch_norm_equals_batchnorm1d():
    torch.manual_seed(0)
    a, ref = SparseBatchNorm(5), torch.nn.BatchNorm1d(5)
    with torch.no_grad():
        a.weight.uniform_()
        a.bias.uniform_()
    ref.load_state_dict(a.state_dict())
    x = torch.randn(50, 5) * 3 + 1
    xa, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yr = a(xa), ref(xr)
    torch.testing.assert_close(ya, yr)
    (ya**2).sum().backward()
    (yr**2).sum().backward()
    torch.testing.assert_close(xa.grad, xr.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a.running_var, ref.running_var)
    a.eval(), ref.eval()
    torch.testing.assert_close(a(x), ref(x))


def test_sparse_network_shares_the_dense_parameter_layout():
    for name in ("uresnet", "a21", "polaris"):
        dense = PRESETS[name]
        assert count_parameters(meta_network(dense.replace(conv_mode="sparse"))) == count_parameters(
            meta_network(dense))
    dense_net = build_network(TINY.replace(conv_mode="2D", upsampling="convolutional", downsampling="convolutional"))
    sparse_net = build_network(TINY.replace(upsampling="convolutional", downsampling="convolutional"))
    sparse_net.load_state_dict(dense_net.state_dict())  # strict: same names and shapes


def _event(b=2, h=32, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, h, w, generator=g)
    x = x * (torch.rand(b, 3, h, w, generator=g) < 0.15)
    labels = torch.where(x > 0.6, 2, torch.where(x > 0, 1, 0))
    return x, labels


def test_dense_call_returns_background_at_inactive_pixels_and_matches_sparse_call():
    torch.manual_seed(0)
    net = build_network(TINY).eval()
    x, _ = _event()
    out = net(x)
    assert out.shape == (2, 3, 3, 32, 64)
    out = out.unbind(2)
    inactive = x[:, 0] == 0
    bg = background_logits(3)
    assert torch.equal(out[0].permute(0, 2, 3, 1)[inactive], bg.expand(int(inactive.sum()), 3))
    # the sparse call, with each plane's voxels in a shuffled order, gives the same logits
    planes = []
    for p in range(3):
        c = x[:, p].nonzero()
        perm = torch.randperm(len(c), generator=torch.Generator().manual_seed(p))
        c = c[perm]
        planes.append((c, x[:, p][c[:, 0], c[:, 1], c[:, 2]][:, None]))
    logits = net.forward_sparse(planes, 2, (32, 64))
    for p, (c, _) in enumerate(planes):
        torch.testing.assert_close(logits[p], _at(out[p], c), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("changes", [{}, dict(connections="sum", upsampling="convolutional",
                                              downsampling="convolutional", residual=False)])
def test_sparse_network_trains(changes):
    from tpcflow.models.loss import SegmentationLoss

    torch.manual_seed(0)
    net = build_network(TINY.replace(**changes))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, labels = _event()
    coords, _ = sparsify(x)
    loss_fn = SegmentationLoss("light")
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = loss_fn(net(x), labels)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(p.grad is not None for p in net.parameters())
    assert losses[-1] < 0.5 * losses[0]
    assert coords.shape[1] == 3


def test_to_dense_and_bad_sparse_input():
    coords = torch.tensor([[0, 1, 2], [1, 0, 0]])
    vals = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    dense = to_dense(coords, vals, 2, (2, 3), fill=-1.0)
    assert dense.shape == (2, 2, 2, 3) and dense[0, :, 1, 2].tolist() == [1.0, 2.0]
    assert dense[1, :, 0, 0].tolist() == [3.0, 4.0] and float(dense.sum()) == 10.0 - 20.0
    net = build_network(TINY)
    one = (torch.tensor([[0, 1, 1]]), torch.ones(1, 1))
    with pytest.raises(ConfigError, match="planes"):
        net.forward_sparse([one, one], 1, (32, 32))
    with pytest.raises(ValueError, match="duplicate"):
        net.forward_sparse([(torch.tensor([[0, 1, 1], [0, 1, 1]]), torch.ones(2, 1)), one, one], 1, (32, 32))
    with pytest.raises(ValueError, match="out of range"):
        net.forward_sparse([(torch.tensor([[0, 40, 1]]), torch.ones(1, 1)), one, one], 1, (32, 32))
    with pytest.raises(ConfigError, match="multiples"):
        net.forward_sparse([one] * 3, 1, (30, 32))


def test_empty_and_single_site_inputs():
    torch.manual_seed(0)
    net = build_network(TINY)
    out = net(torch.zeros(1, 3, 32, 32))  # no charge at all: everything is background
    assert torch.equal(out.argmax(1), torch.zeros(1, 3, 32, 32, dtype=torch.long))
    x = torch.zeros(1, 3, 32, 32)
    x[0, :, 5, 7] = 1.0  # one site per plane: BatchNorm over a single site must not fail
    out = net(x).unbind(2)
    sum(o[0, :, 5, 7].sum() for o in out).backward()
    assert all(torch.isfinite(o).all() for o in out)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sparse_network_on_cuda_matches_cpu():
    torch.manual_seed(0)
    net = build_network(TINY).eval()
    x, _ = _event()
    cpu = net(x)
    gpu = net.cuda()(x.cuda())
    for a, b in zip(cpu.unbind(2), gpu.unbind(2)):
        torch.testing.assert_close(a, b.cpu(), rtol=1e-3, atol=1e-3)
    net.train()
    loss = net(x.cuda()).float().sum()
    loss.backward()
    assert all(p.grad is not None and p.grad.is_cuda for p in net.parameters())
