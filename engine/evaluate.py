"""Evaluation entry points: top-1, top-5 (more than 5 classes), mean cross-entropy, count."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .convert import CrossbarModel, convert
from .hardware import HardwareSpec


@dataclass(frozen=True)
class Metrics:
    top1: float
    top5: float | None
    loss: float
    count: int

    def as_dict(self) -> dict:
        return asdict(self)


class _Accumulator:
    def __init__(self, n: int) -> None:
        self.correct1 = torch.zeros(n, dtype=torch.float64)
        self.correct5 = torch.zeros(n, dtype=torch.float64)
        self.loss = torch.zeros(n, dtype=torch.float64)
        self.count = 0
        self.classes = 0

    def add(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """logits (instances, batch, classes)."""
        i, b, c = logits.shape
        self.classes = c
        y = y.to(logits.device)
        logits = logits.float()
        self.loss += F.cross_entropy(logits.reshape(i * b, c), y.repeat(i), reduction="none").view(i, b).sum(1).double().cpu()
        top = logits.topk(min(5, c), dim=-1).indices
        hit = top == y.view(1, b, 1)
        self.correct1 += hit[..., 0].sum(1).double().cpu()
        self.correct5 += hit.any(-1).sum(1).double().cpu()
        self.count += b

    def result(self) -> list[Metrics]:
        n = max(self.count, 1)
        return [
            Metrics(
                top1=float(self.correct1[j] / n),
                top5=float(self.correct5[j] / n) if self.classes > 5 else None,
                loss=float(self.loss[j] / n),
                count=self.count,
            )
            for j in range(len(self.loss))
        ]


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def evaluate(model: CrossbarModel, loader: Iterable, seeds: Sequence[int] | None, reprogram: bool = True) -> list[Metrics]:
    """Metrics of each instance in ``seeds`` (one batched call); ``None``: the ideal crossbar.
    ``reprogram=False`` evaluates the instances already programmed (e.g. after a mitigation
    edited them); ``seeds`` is then ignored."""
    model.eval()
    if reprogram:
        model.program(seeds)
    model.reset_read_noise()
    dev = _device_of(model)
    acc = _Accumulator(model.n_instances)
    for x, y in loader:
        acc.add(model(x.to(dev)), y)
    return acc.result()


@torch.no_grad()
def evaluate_float(model: nn.Module, loader: Iterable) -> Metrics:
    """The plain PyTorch model on the same data (software baseline)."""
    model.eval()
    dev = _device_of(model)
    acc = _Accumulator(1)
    for x, y in loader:
        acc.add(model(x.to(dev)).unsqueeze(0), y)
    return acc.result()[0]


def evaluate_on_hardware(model: nn.Module, hardware: HardwareSpec, loader: Iterable, seed: int | None,
                         calibration: Iterable, keep_digital: Iterable[str] = ()) -> Metrics:
    """Convert, calibrate on ``calibration`` (batches of inputs or (x, y) pairs), and evaluate
    one hardware instance (``seed=None``: the ideal crossbar)."""
    xmodel = convert(model, hardware, keep_digital)
    dev = _device_of(model)
    xmodel.calibrate(b[0].to(dev) if isinstance(b, (tuple, list)) else b.to(dev) for b in calibration)
    return evaluate(xmodel, loader, None if seed is None else [seed])[0]
