"""3D UResNet: [1,k,k] kernels, planes mixed by a [3,1,1] conv; equivalent to the 2D network."""

from __future__ import annotations

import pytest
import torch

from tpcflow.errors import ConfigError
from tpcflow.models.registry import NetworkConfig, build_network
from tpcflow.models.uresnet3d import state_dict_2d_to_3d

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = NetworkConfig(n_initial_filters=4, network_depth=3, blocks_per_layer=1, blocks_deepest_layer=1,
                     blocks_final=1, bottleneck_deepest=8)


@pytest.mark.parametrize("changes", [{}, dict(connections="sum", upsampling="convolutional")])
def test_3d_equals_2d_with_converted_weights_in_eval(changes):
    torch.manual_seed(0)
    cfg2 = TINY.replace(**changes)
    net2 = build_network(cfg2)
    # give BN non-trivial running statistics
    net2.train()
    with torch.no_grad():
        net2(torch.rand(2, 3, 32, 32))
    net3 = build_network(cfg2.replace(conv_mode="3D"))
    net3.load_state_dict(state_dict_2d_to_3d(net2.state_dict(), cfg2))
    net2.eval(), net3.eval()
    x = torch.rand(2, 3, 32, 64)
    assert net3(x).shape == (2, 3, 3, 32, 64)
    for a, b in zip(net2(x).unbind(2), net3(x).unbind(2)):
        assert b.shape == (2, 3, 32, 64)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_3d_kernels_are_1kk_and_deepest_mixes_planes():
    net = build_network(TINY.replace(conv_mode="3D"))
    convs = {n: m for n, m in net.named_modules() if isinstance(m, torch.nn.Conv3d)}
    assert convs["deepest.squeeze.conv"].kernel_size == (3, 1, 1)
    assert all(m.kernel_size[0] == 1 for n, m in convs.items() if n != "deepest.squeeze.conv")
    out = net(torch.rand(1, 3, 16, 16))
    assert out.shape == (1, 3, 3, 16, 16)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    with pytest.raises(ConfigError, match="multiples"):
        net(torch.rand(1, 3, 12, 16))


def test_3d_activation_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    net = build_network(TINY.replace(conv_mode="3D"))
    x = torch.rand(1, 3, 16, 16)
    net(x)[:, :, 0].sum().backward()
    expected = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    net.activation_checkpointing = True
    net(x)[:, :, 0].sum().backward()
    for a, b in zip(expected, [p.grad for p in net.parameters()]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
