"""CIFAR networks: ResNet-20 (He et al. 2016, PytorX Fig. 2), a small VGG, AlexNet of Yu Table I."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class _BasicBlock(nn.Module):
    """3x3-3x3 residual block; option-A shortcut (stride-2 subsampling + zero channel padding),
    parameter-free as in the original CIFAR ResNets."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = cout - cin
        self.stride = stride

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        sc = x
        if self.stride != 1 or self.pad:
            sc = x[:, :, :: self.stride, :: self.stride]
            sc = F.pad(sc, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + sc)


class ResNetCIFAR(nn.Module):
    def __init__(self, depth: int = 20, in_channels: int = 3, num_classes: int = 10, input_size: int = 32) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"ResNet depth must be 6n + 2 (got {depth})")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for j in range(n):
                blocks.append(_BasicBlock(cin, cout, stride if j == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def resnet20(in_channels: int = 3, num_classes: int = 10, input_size: int = 32) -> ResNetCIFAR:
    return ResNetCIFAR(20, in_channels, num_classes, input_size)


class VGGSmall(nn.Module):
    """VGG-style: [c, c, M, 2c, 2c, M, 4c, 4c, M] 3x3 convs with BN, then a linear classifier."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, input_size: int = 32, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for cout in (width, width, 0, 2 * width, 2 * width, 0, 4 * width, 4 * width, 0):
            if cout == 0:  # 2x2 max pooling
                layers.append(nn.MaxPool2d(2))
                continue
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            cin = cout
        self.features = nn.Sequential(*layers)
        side = input_size // 8
        self.classifier = nn.Linear(4 * width * side * side, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class AlexNetCIFAR(nn.Module):
    """Yu Table I: 32x32 - 64c11 - 2s - 192c5 - 2s - 384c3 - 256c3 - 256c3 - 2s - 10."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, input_size: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 11, padding=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 192, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(192, 384, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = input_size // 8
        self.classifier = nn.Linear(256 * side * side, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))
