"""Evaluation entry points: top-1, top-5 (more than 5 classes), mean cross-entropy, count."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .conversion import CrossbarModel, convert
from .hardware import HardwareSpec


@dataclass(frozen=True)
class Metrics:
    top1: float
    top5: float | None
    loss: float
    count: int


class _Accumulator:
    """Sums on the logits' device; one copy to the host at the end (no sync per batch)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.sums: torch.Tensor | None = None  # (3, n): loss, top-1 hits, top-5 hits
        self.count = 0
        self.classes = 0

    def add(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """logits (instances, batch, classes)."""
        i, b, c = logits.shape
        self.classes = c
        y = y.to(logits.device)
        logits = logits.float()
        loss = F.cross_entropy(logits.reshape(i * b, c), y.repeat(i), reduction="none").view(i, b).sum(1)
        hit = logits.topk(min(5, c), dim=-1).indices == y.view(1, b, 1)
        batch = torch.stack([loss.double(), hit[..., 0].sum(1).double(), hit.any(-1).sum(1).double()])
        self.sums = batch if self.sums is None else self.sums + batch
        self.count += b

    def result(self) -> list[Metrics]:
        sums = torch.zeros(3, self.n, dtype=torch.float64) if self.sums is None else self.sums.cpu()
        self.loss, self.correct1, self.correct5 = sums[0], sums[1], sums[2]
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
def evaluate(
    model: CrossbarModel, loader: Iterable, seeds: Sequence[int] | None, reprogram: bool = True
) -> list[Metrics]:
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


def evaluate_on_hardware(
    model: nn.Module,
    hardware: HardwareSpec,
    loader: Iterable,
    seed: int | None,
    calibration: Iterable,
    keep_digital: Iterable[str] = (),
) -> Metrics:
    """Convert, calibrate on ``calibration`` (batches of inputs or (x, y) pairs), and evaluate
    one hardware instance (``seed=None``: the ideal crossbar)."""
    xmodel = convert(model, hardware, keep_digital)
    dev = _device_of(model)
    xmodel.calibrate(b[0].to(dev) if isinstance(b, (tuple, list)) else b.to(dev) for b in calibration)
    return evaluate(xmodel, loader, None if seed is None else [seed])[0]
