"""The sparse convolution and the sparse UResNet on a real SBND event (cosmic_tagging_light.h5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import data_path
from torch.nn import functional as F

from tpcflow.models.loss import SegmentationLoss
from tpcflow.models.metrics import segmentation_metrics
from tpcflow.models.registry import NetworkConfig, build_network
from tpcflow.models.sparse import SparseGeometry, background_logits, submanifold_conv, to_dense

pytestmark = pytest.mark.usefixtures("one_torch_thread")

H, W = 1280, 2048


@pytest.fixture(scope="module")
def real_event():
    """Entry 0 as per-plane (coords [N, 3] = (0, y, x), charge [N, 1], labels [N]), CosmicTagger layout."""
    from tpcflow.io import open_larcv3

    with open_larcv3(data_path("larcv3/cosmic_tagging_light.h5")) as reader:
        charge = reader.read_sparse_block("sparse2d/sbndwire", 0, 1)
        labels = reader.read_sparse_block("sparse2d/sbnd_cosmicseg", 0, 1)
    assert np.array_equal(charge.index, labels.index)
    planes, start = [], 0
    for p, n in enumerate(charge.counts[0]):
        idx = charge.index[start : start + n].astype(np.int64)
        w_, h_ = np.unravel_index(idx, charge.metas[p].number_of_voxels)  # dense[w, h] -> image[h, w]
        coords = torch.from_numpy(np.stack([np.zeros_like(h_), h_, w_], axis=1))
        planes.append((coords, torch.from_numpy(charge.values[start : start + n].copy())[:, None],
                       torch.from_numpy(labels.values[start : start + n].astype(np.int64))))
        start += n
    return planes


def test_real_plane_submanifold_conv_equals_dense_conv(real_event):
    coords, charge, _ = real_event[0]
    order = torch.argsort(coords[:, 1] * W + coords[:, 2])
    coords, charge = coords[order], charge[order]
    assert 0.004 < len(coords) / (H * W) < 0.01  # about 0.7 % occupied
    torch.manual_seed(0)
    weight = torch.randn(4, 1, 5, 5, requires_grad=True)
    probe = torch.randn(len(coords), 4)
    out = submanifold_conv(charge, SparseGeometry(coords, (H, W), 1), weight)
    (out * probe).sum().backward()
    sparse_grad = weight.grad.clone()
    weight.grad = None
    dense = torch.zeros(1, 1, H, W)
    dense[0, 0, coords[:, 1], coords[:, 2]] = charge[:, 0]
    ref = F.conv2d(dense, weight, padding=2)[0][:, coords[:, 1], coords[:, 2]].t()
    (ref * probe).sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-2)  # ADC values up to ~2800
    torch.testing.assert_close(sparse_grad, weight.grad, rtol=1e-4, atol=1e-1)


def test_sparse_network_trains_on_a_real_full_resolution_event(real_event):
    cfg = NetworkConfig(n_initial_filters=4, network_depth=6, blocks_per_layer=1, blocks_deepest_layer=1,
                        blocks_final=0, bottleneck_deepest=16, conv_mode="sparse")
    torch.manual_seed(0)
    net = build_network(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    inputs = [(c, q / 100.0) for c, q, _ in real_event]  # ADC to O(1)
    labels = [lab for *_, lab in real_event]
    loss_fn = SegmentationLoss("light")
    losses = []
    for _ in range(6):
        opt.zero_grad()
        logits = net.forward_sparse(inputs, 1, (H, W))
        loss = loss_fn(logits, labels)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert [lg.shape for lg in logits] == [(len(c), 3) for c, *_ in real_event]
    # metrics on the densified prediction: inactive pixels are background and count as correct
    with torch.no_grad():
        bg = background_logits(3)
        dense_logits = [to_dense(c, lg.detach(), 1, (H, W), bg) for (c, *_), lg in zip(real_event, logits)]
        dense_labels = torch.zeros(1, 3, H, W, dtype=torch.long)
        for p, (c, _, lab) in enumerate(real_event):
            dense_labels[0, p, c[:, 1], c[:, 2]] = lab
        m = segmentation_metrics(dense_logits, dense_labels)
    n_active = sum(len(c) for c, *_ in real_event)
    assert m["Average/Total_Accuracy"] >= 1 - n_active / (3 * H * W)
    assert 0.0 <= m["Average/mIoU"] <= 1.0
