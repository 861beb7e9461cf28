"""One training trial on a sampled crossbar instance (TxSim Sec. V): SGD (with momentum in a
digital accumulator, 0 for TxSim's plain SGD) with the crossbar's forward, backward and update;
test top-1 after every epoch. Per-layer weight ranges W_max (TxSim's Scale_k) come from the same
recipe trained natively in float.

The initial weights and the batch order come from the recipe seed (the same for every instance,
so instances are compared on the same training run); stuck cells and write noise come from the
instance seed."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..data import DataSplit, loader
from ..evaluation import Metrics, evaluate_float
from ..hardware import HardwareSpec, check_write_granularity
from ..models import build_model
from .analog import analog_layers, to_analog


@dataclass
class CrossbarTrainResult:
    top1_per_epoch: list[float]
    final: Metrics  # test metrics after the last epoch
    seconds: float
    model: nn.Module = field(repr=False)

    @property
    def top1(self) -> float:
        return self.top1_per_epoch[-1]


def native_weight_ranges(
    model_name: str,
    data: DataSplit,
    epochs: int,
    batch_size: int,
    lr: float,
    recipe_seed: int,
    momentum: float,
    device: torch.device | str = "cpu",
) -> list[float]:
    """TxSim's weight statistics from native training: the largest |w| each Linear/Conv2d reaches
    during the same float training run (same initial weights, batch order and optimiser)."""
    device = torch.device(device)
    torch.manual_seed(recipe_seed)
    model = build_model(model_name, data.in_channels, data.num_classes, data.input_size).to(device)
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    peak = [float(m.weight.detach().abs().max()) for m in layers]
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    for _ in range(epochs):
        model.train()
        for x, y in loader(data.train, batch_size, shuffle=True, seed=recipe_seed):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x.to(device)), y.to(device)).backward()
            opt.step()
            peak = [max(p, float(m.weight.detach().abs().max())) for p, m in zip(peak, layers)]
    return peak


def train_on_crossbar(
    model_name: str,
    data: DataSplit,
    hw: HardwareSpec,
    epochs: int,
    batch_size: int,
    lr: float,
    recipe_seed: int,
    instance_seed: int,
    device: torch.device | str = "cpu",
    eval_batch: int = 540,
    momentum: float = 0.9,
    weight_ranges: list[float] | None = None,
) -> CrossbarTrainResult:
    """``weight_ranges``: per-layer W_max before the ``hardware.update.weight_range`` factor (default:
    :func:`native_weight_ranges` of the same recipe; pass them to reuse one native run)."""
    device = torch.device(device)
    check_write_granularity(hw, momentum)
    if weight_ranges is None:
        weight_ranges = native_weight_ranges(model_name, data, epochs, batch_size, lr, recipe_seed, momentum, device)
    torch.manual_seed(recipe_seed)
    model = build_model(model_name, data.in_channels, data.num_classes, data.input_size)
    model = to_analog(model, hw, instance_seed, weight_ranges).to(device)
    layers = analog_layers(model)
    digital = [p for n, p in model.named_parameters() if p.requires_grad and not n.endswith(".delta")]
    opt = torch.optim.SGD(digital, lr=lr, momentum=momentum) if digital else None  # biases stay digital
    train = loader(data.train, batch_size, shuffle=True, seed=recipe_seed)
    test = loader(data.test, eval_batch)
    start, history = time.perf_counter(), []
    for _ in range(epochs):
        model.train()
        for x, y in train:
            x, y = x.to(device), y.to(device)
            F.cross_entropy(model(x), y).backward()
            for layer in layers:
                layer.apply_update(lr, momentum)
            if opt is not None:
                opt.step()
                opt.zero_grad(set_to_none=True)
        for layer in layers:
            layer.end_epoch()
        final = evaluate_float(model, test)
        history.append(final.top1)
    return CrossbarTrainResult(history, final, time.perf_counter() - start, model)
