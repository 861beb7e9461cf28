"""``row_flip``, ``row_perm``: remap tile rows to match stuck cells (Jung Sec. II-A, Table V;
row flipping after Zhang et al., row permutation after Chen et al.).

With the instance's fault map, every tile chooses where each logical row is stored:
  * ``row_perm``: a permutation of rows within the tile (an input router per tile), found as
    the linear assignment (scipy) minimising the significance-weighted level error
    sum over stuck cells of 2^(b s) |target - stuck level|;
  * ``row_flip``: store a row as -w (the two arrays swapped, the input negated digitally) when
    that matches the stuck values better (sign flip only; differential realisation);
  * both composed (``row_flip+row_perm``): the assignment over min(cost, flipped cost).
The remapped targets are re-programmed on the same physical cells (same faults and variation).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

from .base import Mitigation, Reprogram, TrialContext

if TYPE_CHECKING:  # torch, scipy and the engine load where the work is done: the spec validates without them
    import torch

    from ..conversion import CrossbarModel
    from ..crossbar import CrossbarLayer
    from ..instance import LayerCells


def column_significance(layer: CrossbarLayer) -> torch.Tensor:
    """Weight of an error in each physical column: 2^(b s) for data and reference columns of
    slice s, 0 for columns that are not read."""
    import torch

    grid, b = layer.grid, layer.hw.device.bits_per_cell
    dev = layer.weight.device
    sig = torch.zeros(grid.cols, dtype=torch.float64, device=dev)
    per_slice = 2.0 ** (torch.arange(grid.slices, dtype=torch.float64, device=dev) * b)
    sig[: grid.data_cols] = per_slice.repeat(grid.wcols)
    if grid.offset:  # a reference cell error shifts every column of its slice
        sig[grid.data_cols : grid.used_cols] = per_slice * grid.wcols
    return sig


def remap_costs(layer: CrossbarLayer, targets: torch.Tensor, faults: torch.Tensor, flip: bool) -> torch.Tensor:
    """cost[i, g, t_r, t_c, r, p]: error of storing logical row r on physical row p."""
    import torch

    from ..nonideal.faults import HEALTHY, STUCK_GMAX

    full = layer.hw.device.levels - 1
    stuck = faults != HEALTHY
    value = torch.where(faults == STUCK_GMAX, float(full), 0.0).double()
    weight = stuck.double() * column_significance(layer).to(faults.device)  # (I, A, G, t_r, t_c, R, C)
    lvl = targets.double().flip(0) if flip else targets.double()  # (A, G, t_r, t_c, R, C)
    err = (lvl[None].unsqueeze(-2) - value.unsqueeze(-3)).abs()  # (I, A, G, t_r, t_c, R_log, R_phys, C)
    return (err * weight.unsqueeze(-3)).sum(dim=(1, -1))  # (I, G, t_r, t_c, R, R)


def stuck_mismatches(layer: CrossbarLayer) -> tuple[int, float]:
    """(stuck cells in read columns whose level differs from their target, weighted level error)."""
    import torch

    from ..nonideal.faults import HEALTHY, STUCK_GMAX

    cells = layer.cells
    if cells is None or cells.faults is None or cells.levels is None:
        return 0, 0.0  # nothing programmed, or no stuck cells
    full = layer.hw.device.levels - 1
    value = torch.where(cells.faults == STUCK_GMAX, torch.tensor(full, device=cells.faults.device), 0)
    target = cells.levels.expand_as(cells.faults)
    read = column_significance(layer).to(cells.faults.device) > 0
    bad = (cells.faults != HEALTHY) & (value != target) & read
    weighted = (
        (value - target).abs().double() * column_significance(layer).to(cells.faults.device) * (cells.faults != HEALTHY)
    ).sum()
    return int(bad.sum()), float(weighted)


def remap_layer(layer: CrossbarLayer, permute: bool, flip: bool) -> LayerCells | None:
    """The layer's instance programmed with its logical rows assigned to physical rows (and arrays
    swapped where flipped) at least cost; None where nothing is stuck."""
    import numpy as np
    import torch
    from scipy.optimize import linear_sum_assignment

    from ..instance import HardwareInstance

    cells = layer.cells
    if cells is None or cells.faults is None:
        return None
    if flip and layer.grid.offset:
        raise ValueError("row_flip needs the differential realisation (it swaps the two arrays)")
    targets = layer.target_levels()  # logical, (A, G, t_r, t_c, R, C)
    c0 = remap_costs(layer, targets, cells.faults, flip=False)
    c1 = remap_costs(layer, targets, cells.faults, flip=True) if flip else None
    cost = c0 if c1 is None else torch.minimum(c0, c1)
    i, g, tr, tc, r, _ = cost.shape
    if permute:
        flat = cost.reshape(-1, r, r).cpu().numpy()
        assignment = np.stack([linear_sum_assignment(c)[1] for c in flat])  # one assignment per tile
        source = torch.from_numpy(assignment).reshape(i, g, tr, tc, r).to(cost.device)
    else:
        source = torch.arange(r, device=cost.device).expand(i, g, tr, tc, r).clone()
    flipped = None
    if c1 is not None:
        d1 = torch.gather(c1, -1, source.unsqueeze(-1)).squeeze(-1)
        d0 = torch.gather(c0, -1, source.unsqueeze(-1)).squeeze(-1)
        flipped = d1 < d0
    # physical targets: physical row source[r] holds logical row r (arrays swapped if flipped)
    logical = targets.unsqueeze(0).expand(i, *targets.shape)  # (I, A, G, t_r, t_c, R, C)
    if flipped is not None:
        logical = torch.where(flipped[:, None, ..., None], logical.flip(1), logical)
    physical = torch.empty_like(logical)
    idx = source[:, None, ..., None].expand_as(logical)
    physical.scatter_(5, idx, logical)
    assert cells.seeds is not None  # faults exist only on sampled instances
    source_instance = cells.instance or HardwareInstance(cells.seeds, layer.hw)
    fresh = source_instance.cells(physical, layer.layer_index)  # the same physical draws, new targets
    return replace(fresh, row_source=source, row_flipped=flipped)


class _RowRemap(Mitigation):
    permute: ClassVar[bool] = False
    flip: ClassVar[bool] = False

    def after_program(self, xmodel: CrossbarModel, ctx: TrialContext) -> Reprogram:
        remapped = {layer.name: remap_layer(layer, self.permute, self.flip) for layer in xmodel.crossbar_layers()}
        return Reprogram({name: cells for name, cells in remapped.items() if cells is not None})


class RowFlipping(_RowRemap):
    name: ClassVar[str] = "row_flip"
    flip: ClassVar[bool] = True


class RowPermutation(_RowRemap):
    name: ClassVar[str] = "row_perm"
    permute: ClassVar[bool] = True


class RowFlipPermutation(_RowRemap):
    """Both at once (the composition ``row_flip+row_perm``): one joint assignment."""

    name: ClassVar[str] = "row_flip+row_perm"
    permute: ClassVar[bool] = True
    flip: ClassVar[bool] = True
