"""Issue 14: the sparse network's training path (voxels, per-voxel loss, voxel metrics) gives the
dense path's loss and metrics on the same events, in float64."""

from __future__ import annotations

import math

import pytest
import torch

from tpcflow.models.loss import SegmentationLoss
from tpcflow.models.metrics import segmentation_metrics
from tpcflow.models.registry import NetworkConfig, build_network
from tpcflow.models.sparse.minibatch import SparseMinibatch, voxel_metrics

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = NetworkConfig(n_initial_filters=4, network_depth=3, blocks_per_layer=1, blocks_deepest_layer=1,
                     blocks_final=1, bottleneck_deepest=8, conv_mode="sparse")


def _events(b=3, h=32, w=64, seed=0, missed=True):
    """Charge on ~15% of pixels, labels by charge; with ``missed``, some labelled pixels hold no charge
    and one image of one plane holds no neutrino (the NaN rules)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, h, w, generator=g, dtype=torch.float64)
    x = x * (torch.rand(b, 3, h, w, generator=g) < 0.15)
    y = torch.where(x > 0.6, 2, torch.where(x > 0, 1, 0))
    if missed:
        y[(x == 0) & (torch.rand(b, 3, h, w, generator=g) < 0.01)] = 1
        y[(x == 0) & (torch.rand(b, 3, h, w, generator=g) < 0.003)] = 2
    y[0, 1][y[0, 1] == 2] = 1
    return x, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_voxel_metrics_equal_the_dense_metrics_of_the_dense_output(seed):
    torch.manual_seed(seed)
    net = build_network(TINY).double().eval()
    x, y = _events(seed=seed)
    batch = SparseMinibatch.from_dense(x, y)
    assert batch.missed[..., 1:].sum() > 0, "the events exercise labelled pixels without charge"
    with torch.no_grad():
        dense = segmentation_metrics(net(x), y)
        sparse = voxel_metrics(net.forward_sparse(batch.planes(), batch.batch_size, batch.shape), batch)
    assert dense.keys() == sparse.keys()
    for key, value in dense.items():
        if math.isnan(value):
            assert math.isnan(sparse[key]), key
        else:
            assert sparse[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
    assert math.isnan(dense["plane1/Neutrino_Accuracy"]) is False  # other images of plane 1 have neutrinos


def test_the_focal_loss_over_voxels_equals_the_dense_loss_and_gradients():
    """Pixels without charge are certain background in the dense output: focal weight 0, CE 0."""
    torch.manual_seed(3)
    net = build_network(TINY).double()
    x, y = _events(seed=3, missed=False)
    loss_fn = SegmentationLoss("focal")
    dense_loss = loss_fn(net(x), y)
    dense_grads = torch.autograd.grad(dense_loss, list(net.parameters()))
    batch = SparseMinibatch.from_dense(x, y)
    sparse_loss = loss_fn(net.forward_sparse(batch.planes(), batch.batch_size, batch.shape), batch.labels)
    sparse_grads = torch.autograd.grad(sparse_loss, list(net.parameters()))
    # SegmentationLoss computes in float32 (sums over 2,000 voxels or 18,000 pixels in another order)
    assert sparse_loss.item() == pytest.approx(dense_loss.item(), rel=1e-6)
    for a, b in zip(sparse_grads, dense_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_an_empty_plane_and_no_labels():
    x, y = _events(b=2, missed=False)
    x[1, 2] = 0
    y[1, 2] = 0
    batch = SparseMinibatch.from_dense(x, y)
    assert batch.voxels == int((x != 0).sum()) and batch.missed[..., 1:].sum() == 0
    unlabeled = SparseMinibatch.from_dense(x)
    assert unlabeled.labels is None and unlabeled.missed is None
    with pytest.raises(ValueError, match="need the labels"):
        voxel_metrics([torch.zeros(len(c), 3) for c in unlabeled.coords], unlabeled)


def _coo(t: torch.Tensor) -> torch.Tensor:
    """Rows (batch, plane, y, x, value) of the non-zero pixels, in the loader's order (batch, plane, pixel)."""
    nz = torch.nonzero(t)
    return torch.cat([nz.to(t.dtype), t[t != 0][:, None]], dim=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_minibatch_of_coo_rows_equals_the_minibatch_of_the_dense_batch(seed):
    """The loader's COO rows (image and label) give the same voxels, labels and missed counts as the
    dense batch they come from, including labelled pixels without charge and planes without voxels."""
    x, y = _events(seed=seed)
    x[1, 2] = 0
    want = SparseMinibatch.from_dense(x, y)
    got = SparseMinibatch.from_coo(_coo(x.float()).numpy(), _coo(y).numpy(), 3, 3, (32, 64))
    assert got.batch_size == 3 and got.shape == (32, 64)
    for a, b in zip(got.coords + got.labels, want.coords + want.labels, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(got.features, want.features, strict=True):
        torch.testing.assert_close(a, b.float(), rtol=0, atol=0)
    torch.testing.assert_close(got.missed, want.missed, rtol=0, atol=0)
    assert got.missed[..., 1:].sum() > 0
    unlabeled = SparseMinibatch.from_coo(_coo(x.float()).numpy(), None, 3, 3, (32, 64))
    assert unlabeled.labels is None and unlabeled.missed is None and unlabeled.voxels == want.voxels
