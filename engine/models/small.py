"""The papers' small networks: MLP 784-256-256-256-10 and LeNet-5 (Yu Table I, PytorX Sec. 4)."""

from __future__ import annotations

from torch import nn


class MLP(nn.Module):
    """Yu Table I: 784-256-256-256-10 (in_features = channels * input_size**2)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 28, hidden: int = 256) -> None:
        super().__init__()
        d = in_channels * input_size * input_size
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(d, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.layers(x)


class LeNet5(nn.Module):
    """Yu Table I: s x s - 6c5 - 2s - 16c5 - 2s - 120 - 84 - 10 (s = 28: 16*4*4 = 256 features;
    s = 32: 16*5*5 = 400, the classic LeNet-5)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 28) -> None:
        super().__init__()
        side = ((input_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"LeNet5 needs input_size >= 16 (got {input_size})")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * side * side, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
