"""Per-tile output-current shift statistics (PytorX Sec. 4.3, NIA step 2).

For a programmed instance, the shift of every tile's partial sums between the ideal and the
non-ideal (IR drop) effective conductance is collected over data batches; its per-tile mean and
standard deviation parameterise the Gaussian noise that noise-injection adaption trains with.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from .conversion import CrossbarModel
from .crossbar import CrossbarLayer


@dataclass(frozen=True)
class TileShift:
    """Shift (ideal - non-ideal partial sums, output units) per tile of one layer."""

    mean: torch.Tensor  # (groups, t_r, t_c)
    std: torch.Tensor  # (groups, t_r, t_c)
    count: int


@torch.no_grad()
def tile_shift_statistics(xmodel: CrossbarModel, inputs: Iterable[torch.Tensor]) -> dict[str, TileShift]:
    """Mean and std per tile, over reads, tile columns and the programmed instances."""
    sums: dict[str, list] = {}

    def hook(layer: CrossbarLayer, args: tuple) -> None:
        d = layer.tile_shift(args[0])  # (I, G, t_r, M, t_c, wcols)
        valid = ~torch.isnan(d)
        d = torch.nan_to_num(d)
        dims = (0, 3, 5)
        acc = sums.setdefault(layer.name, [0.0, 0.0, 0])
        acc[0] = acc[0] + d.double().sum(dims)
        acc[1] = acc[1] + (d.double() ** 2).sum(dims)
        acc[2] = acc[2] + valid.sum(dims)

    handles = [layer.register_forward_pre_hook(hook) for layer in xmodel.crossbar_layers()]
    try:
        for x in inputs:
            xmodel(x)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for name, (s1, s2, n) in sums.items():
        n = n.clamp_min(1)
        mean = s1 / n
        out[name] = TileShift(mean.float(), (s2 / n - mean**2).clamp_min(0).sqrt().float(), int(n.max()))
    return out
