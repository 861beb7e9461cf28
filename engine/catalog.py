"""Names the spec validates against, importable without torch (the CLI's ``validate`` stays fast):
data sets, zoo models and weight-mapping schemes. The implementations live in :mod:`engine.data`,
:mod:`engine.models` and :mod:`engine.mapping`."""

from __future__ import annotations

from typing import Literal

DATASETS = ("digits", "mnist", "cifar10", "cifar100", "imagefolder")
ZOO_MODELS = ("mlp", "lenet5", "resnet20", "vgg_small", "alexnet_cifar")
TORCHVISION_MODELS = ("resnet18", "resnet50", "vgg16", "alexnet", "googlenet")
MODEL_NAMES = ZOO_MODELS + TORCHVISION_MODELS

Scheme = Literal["direct", "bit_inversion"]
