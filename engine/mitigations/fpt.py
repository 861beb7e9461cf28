"""``fpt``: free parameter tuning, Jung et al. Sec. III.

On the faulty instance, ``batches`` batches of an unlabeled calibration set run forward with
only the BatchNorm running statistics updated by EMA (momentum ``momentum``, initialised from the
trained statistics; no labels, no gradients). Models without BN get a BN layer inserted after
every Linear/Conv2d, initialised to the float model's own output statistics so that it is the
identity in float (gamma = sigma, beta = mu); FPT then re-standardises each channel of the faulty
hardware to the trained distribution. For deployment the recalibrated BN folds into the layer's
digital output stage (:func:`fold_batchnorm` shows the float equivalence); the crossbar weights
stay as programmed.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from .base import BatchNormStats, Mitigation, TrialContext

if TYPE_CHECKING:  # torch is imported where the work is done: the spec validates without it
    import torch
    from torch import nn

    from ..conversion import CrossbarModel


def _bn_types() -> tuple:
    from torch import nn

    return (nn.BatchNorm1d, nn.BatchNorm2d)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, _bn_types()) for m in model.modules())


def insert_batchnorm(model: nn.Module, inputs: list[torch.Tensor]) -> nn.Module:
    """A copy with ``Sequential(layer, BN)`` for every Linear/Conv2d, each BN the identity in float."""
    import torch

    with torch.no_grad():
        return _insert_batchnorm(model, inputs)


def _insert_batchnorm(model: nn.Module, inputs: list[torch.Tensor]) -> nn.Module:
    from torch import nn

    model = copy.deepcopy(model).eval()
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    stats: dict[str, list] = {}

    def record(name):
        def hook(_m, _i, out):
            dims = [0] + list(range(2, out.dim()))
            stats.setdefault(name, []).append(
                (out.mean(dims), out.var(dims, unbiased=False), out.numel() // out.shape[1])
            )

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in targets]
    for x in inputs:
        model(x)
    for h in handles:
        h.remove()
    for name, mod in targets:
        parts = stats[name]
        n = sum(p[2] for p in parts)
        mean = sum(p[0] * p[2] for p in parts) / n
        var = sum((p[1] + p[0] ** 2) * p[2] for p in parts) / n - mean**2
        bn = (nn.BatchNorm2d if isinstance(mod, nn.Conv2d) else nn.BatchNorm1d)(mean.numel(), device=mean.device)
        assert bn.running_mean is not None and bn.running_var is not None  # track_running_stats is on
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var.clamp_min(0))
        bn.weight.copy_((var.clamp_min(0) + bn.eps).sqrt())
        bn.bias.copy_(mean)
        model.set_submodule(name, nn.Sequential(mod, bn))
    return model.eval()


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A float copy with every BN that directly follows a Linear/Conv2d folded into its weights."""
    import torch

    with torch.no_grad():
        return _fold_batchnorm(model)


def _fold_batchnorm(model: nn.Module) -> nn.Module:
    import torch
    from torch import nn

    model = copy.deepcopy(model).eval()
    for parent in model.modules():
        children = list(parent.named_children())
        for (_, a), (name_b, b) in zip(children, children[1:]):
            if isinstance(a, (nn.Linear, nn.Conv2d)) and isinstance(b, _bn_types()):
                scale = b.weight / (b.running_var + b.eps).sqrt()
                shape = (-1,) + (1,) * (a.weight.dim() - 1)
                a.weight.mul_(scale.view(shape))
                bias = a.bias if a.bias is not None else torch.zeros_like(b.running_mean)
                a.bias = nn.Parameter((bias - b.running_mean) * scale + b.bias)
                setattr(parent, name_b, nn.Identity())
    return model


class FreeParameterTuning(Mitigation):
    name: ClassVar[str] = "fpt"
    batches: int = Field(32, ge=1, le=100_000, description="calibration batches (Jung: 32)")
    batch_size: int = Field(32, ge=1, le=1 << 16, description="images per batch (Jung: 32)")
    momentum: float = Field(0.1, gt=0, le=1, description="EMA momentum of the running statistics")
    # 2: batch statistics on a contiguous copy of the map (the same numbers whatever layout a read returns)
    results_version: ClassVar[int] = 2

    def variant_key(self, base_key: str, hw) -> str:
        return "fpt-bn"

    def derive(self, base: nn.Module, ctx: TrialContext) -> nn.Module:
        return copy.deepcopy(base) if has_batchnorm(base) else insert_batchnorm(base, ctx.calibration_inputs)

    def prepare(self, xmodel: CrossbarModel, ctx: TrialContext) -> BatchNormStats:
        # every trial starts from the trained statistics (kept once per twin, whatever the parameters)
        initial = xmodel.memo(
            FreeParameterTuning, lambda: {n: copy.deepcopy(bn.state_dict()) for n, bn in xmodel.batchnorms().items()}
        )
        return BatchNormStats(initial)

    def after_program(self, xmodel: CrossbarModel, ctx: TrialContext) -> BatchNormStats:
        import torch

        per_read = max((len(b) for b in ctx.calibration_inputs), default=self.batch_size)
        with torch.no_grad():
            return BatchNormStats(self._recalibrate(xmodel, torch.cat(ctx.calibration_inputs), per_read))

    def _recalibrate(self, xmodel: CrossbarModel, x: torch.Tensor, per_read: int) -> dict[str, dict]:
        """Jung's ``batches`` EMA steps on train-mode copies of the twin's BNs (substituted for the
        pass; their statistics are returned, the twin's modules are not written). In train mode a BN
        normalises each batch by that batch's own statistics, so the crossbar reads of several batches
        are independent: they run together, ``per_read // batch_size`` batches per forward (the
        calibration batch size bounds memory), and each BN steps through its batches one by one in
        their order (:func:`_batchwise`), which gives the running statistics of ``batches`` sequential
        forwards."""
        import torch

        chunks = [x[(i * self.batch_size) % len(x) :][: self.batch_size] for i in range(self.batches)]
        size = len(chunks[0])
        equal = all(len(c) == size for c in chunks)
        # one batch per forward, as Jung, where grouping would change what is computed: several instances
        # share a forward's rows (instance-major), and per-read noise is drawn per read
        alone = not equal or xmodel.n_instances > 1 or xmodel.hw.any_read_noise
        together = 1 if alone else max(1, per_read // size)
        copies = {name: copy.deepcopy(bn) for name, bn in xmodel.batchnorms().items()}
        subs = {n: _batchwise(bn, size, self.momentum) for n, bn in copies.items()}
        with xmodel.substituted(subs):
            for start in range(0, len(chunks), together):
                xmodel(torch.cat(chunks[start : start + together]))
        return {name: bn.state_dict() for name, bn in copies.items()}


def _batchwise(bn: nn.modules.batchnorm._BatchNorm, size: int, momentum: float) -> nn.Module:
    """A module applying ``bn``'s train-mode forward (EMA momentum ``momentum``) to consecutive
    batches of ``size`` rows, in order (``bn`` keeps the running statistics).

    The statistics are taken on a contiguous copy of the input. A tiled read returns a convolution's
    output as a channels-last view; the batch statistics' summation order follows the layout, so
    without the copy FPT's numbers would depend on which read path produced the map, and the CPU's
    train-mode BN of a few channels is ~7x slower on that layout (results version 2, see
    :attr:`FreeParameterTuning.results_version`)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Batchwise(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = bn

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            parts = x.contiguous().split(size)
            assert bn.num_batches_tracked is not None  # track_running_stats is on
            bn.num_batches_tracked.add_(len(parts))
            return torch.cat(
                [
                    F.batch_norm(p, bn.running_mean, bn.running_var, bn.weight, bn.bias, True, momentum, bn.eps)
                    for p in parts  # the EMA is sequential; the batches are few and each step is C numbers
                ]
            )

    return Batchwise()
