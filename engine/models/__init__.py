"""Model zoo. Every builder takes (in_channels, num_classes, input_size); ImageNet models come
from torchvision with random initialisation, their weights only from a local checkpoint."""

from __future__ import annotations

from collections.abc import Callable

import torchvision
from torch import nn

from ..catalog import MODEL_NAMES, TORCHVISION_MODELS, ZOO_MODELS  # noqa: F401 - MODEL_NAMES re-exported
from .cifar import AlexNetCIFAR, VGGSmall, resnet20
from .small import MLP, LeNet5

BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "lenet5": LeNet5,
    "resnet20": resnet20,
    "vgg_small": VGGSmall,
    "alexnet_cifar": AlexNetCIFAR,
}
TORCHVISION = TORCHVISION_MODELS
assert tuple(BUILDERS) == ZOO_MODELS


def build_model(name: str, in_channels: int = 1, num_classes: int = 10, input_size: int = 28) -> nn.Module:
    if name in BUILDERS:
        return BUILDERS[name](in_channels=in_channels, num_classes=num_classes, input_size=input_size)
    if name in TORCHVISION:
        if in_channels != 3:
            raise ValueError(f"model {name!r} (torchvision) expects 3 input channels, got {in_channels}")
        kwargs = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    raise ValueError(f"model.name must be one of {list(MODEL_NAMES)} (got {name!r})")
