"""A small ResNet image classifier (MLaaS4HEP ``hep_resnet``).

Residual blocks after He et al., "Deep Residual Learning for Image Recognition"
(arXiv:1512.03385), BasicBlock variant (two 3x3 convolutions + identity or 1x1 projection
shortcut), sized for small HEP image sets on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["BasicBlock", "ResNetClassifier"]


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU; ``stride`` 2 halves H and W."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.shortcut(x))


class ResNetClassifier(nn.Module):
    """Image classifier: [optional average-pool] -> stem conv -> residual stages -> global pool -> linear.

    Parameters
    ----------
    in_channels : int
        Input channels (3 for the three larcv2 wire planes).
    num_classes : int
        Output classes.
    widths : sequence of int
        Channels of each stage; every stage after the first halves H and W (default (8, 16, 32)).
    blocks_per_stage : int
        BasicBlocks per stage (default 1).
    input_pool : int
        Average-pool the input by this factor first (1: off); cheap downsampling for large,
        sparse detector images.

    Notes
    -----
    ``forward(x)``: x (B, in_channels, H, W) float32 -> logits (B, num_classes) float32.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 2, widths: Sequence[int] = (8, 16, 32),
                 blocks_per_stage: int = 1, input_pool: int = 1):
        super().__init__()
        if not widths or min(widths) <= 0 or num_classes < 1 or in_channels < 1 or input_pool < 1:
            raise ValueError(f"invalid ResNetClassifier sizes: in_channels={in_channels}, num_classes={num_classes},"
                             f" widths={tuple(widths)}, input_pool={input_pool}")
        self.pool = nn.AvgPool2d(input_pool) if input_pool > 1 else nn.Identity()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            for j in range(blocks_per_stage):
                layers.append(BasicBlock(cin, w, stride=2 if (i > 0 and j == 0) else 1))
                cin = w
        self.stages = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stages(self.stem(self.pool(x)))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))
