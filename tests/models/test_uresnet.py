"""Dense 2D UResNet: shapes, plane sharing, stacked fast path, channels_last, init, bad input."""

from __future__ import annotations

import pytest
import torch

from tpcflow.errors import ConfigError
from tpcflow.models.registry import NetworkConfig, build_network

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = NetworkConfig(n_initial_filters=4, network_depth=3, blocks_per_layer=1, blocks_deepest_layer=1,
                     blocks_final=1, bottleneck_deepest=8)


def _x(b=2, h=32, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g)


def test_forward_returns_one_logits_tensor_of_three_planes():
    torch.manual_seed(0)
    out = build_network(TINY)(_x())
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3, 3, 32, 64) and out.dtype == torch.float32


@pytest.mark.parametrize("changes", [
    dict(connections="sum"), dict(connections="none"), dict(upsampling="convolutional"),
    dict(downsampling="convolutional"), dict(residual=False, normalization="none"),
    dict(growth_rate="multiplicative"),
])
def test_options_build_and_run(changes):
    torch.manual_seed(0)
    net = build_network(TINY.replace(**changes))
    out = net(_x(b=1))
    assert out.shape == (1, 3, 3, 32, 64)
    out[:, :, 0].sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_weights_are_shared_across_planes_and_mixed_only_at_the_deepest_level():
    torch.manual_seed(0)
    net = build_network(TINY).eval()
    x = _x(b=1)
    # the planes interact: changing plane 1 changes plane 0's output
    y = x.clone()
    y[:, 1] = 0
    assert not torch.allclose(net(x)[:, :, 0], net(y)[:, :, 0])
    # without the cross-plane deepest block, one shared set of weights serves every plane:
    # the same image on all planes gives three identical outputs
    net.deepest = torch.nn.Identity()
    same = x[:, :1].expand(1, 3, 32, 64).contiguous()
    out = net(same).unbind(2)
    torch.testing.assert_close(out[0], out[1])
    torch.testing.assert_close(out[0], out[2])


def test_stacked_planes_equal_per_plane_in_eval_and_differ_in_train_bn():
    torch.manual_seed(0)
    ref = build_network(TINY)
    fast = build_network(TINY.replace(stack_planes=True))
    fast.load_state_dict(ref.state_dict())
    x = _x()
    ref.eval(), fast.eval()
    for a, b in zip(ref(x), fast(x)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # train mode: per-plane BN statistics vs pooled statistics -> different outputs
    ref.train(), fast.train()
    assert not torch.allclose(ref(x)[0], fast(x)[0], atol=1e-4)
    # the reference updates BN running statistics once per plane
    assert int(ref.stem.norm.num_batches_tracked) == 3 and int(fast.stem.norm.num_batches_tracked) == 1


def test_channels_last_matches_contiguous():
    torch.manual_seed(0)
    net = build_network(TINY).eval()
    x = _x()
    expected = net(x)
    net = net.to(memory_format=torch.channels_last)
    got = net(x.to(memory_format=torch.channels_last))
    for a, b in zip(expected, got):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_xavier_init_and_zero_bias():
    torch.manual_seed(0)
    net = build_network(TINY)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
            bound = (6.0 / (fan_in + fan_out)) ** 0.5
            assert float(m.weight.detach().abs().max()) <= bound + 1e-7
            assert torch.count_nonzero(m.bias) == 0
    big = build_network(TINY.replace(n_initial_filters=16)).deepest.blocks.blocks[0].conv1.conv.weight
    # a uniform(-a, a) sample has std a / sqrt(3)
    fan = (big.shape[0] + big.shape[1]) * big.shape[2] * big.shape[3]
    assert abs(float(big.detach().std()) - (6.0 / fan) ** 0.5 / 3**0.5) < 0.05 * (6.0 / fan) ** 0.5


def test_indivisible_size_is_a_clear_error():
    net = build_network(TINY)
    with pytest.raises(ConfigError) as err:
        net(torch.zeros(1, 3, 36, 64))
    msg = str(err.value)
    assert "36x64" in msg and "multiples of 2**3 = 8" in msg and "32x64 or 40x64" in msg
    assert "network_depth is 2" in msg
    with pytest.raises(ConfigError, match="planes"):
        net(torch.zeros(1, 2, 32, 64))


def test_learns_a_tiny_segmentation():
    # pixels above 0.5 are "cosmic": a few Adam steps must reduce the loss clearly
    from tpcflow.models.loss import SegmentationLoss

    torch.manual_seed(0)
    net = build_network(TINY.replace(stack_planes=True))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = _x(b=2, h=16, w=16)
    labels = (x > 0.7).long()
    loss_fn = SegmentationLoss("none")
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = loss_fn(net(x), labels)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_activation_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    net = build_network(TINY)
    x = _x(b=1)
    net(x)[:, :, 1].sum().backward()
    g1 = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    net.activation_checkpointing = True
    net(x)[:, :, 1].sum().backward()
    for a, b in zip(g1, [p.grad for p in net.parameters()]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
