"""Memory footprint of a trial, computed from layer shapes alone (no weights, no allocation).

What stays resident while one instance is evaluated, per cell of a layer's physical tiles
(arrays x groups x t_r x t_c x rows x cols, padded cells included):

* target levels (int64, 8 B) and programmed conductances ``h`` (float32, 4 B);
* fault codes (int8, 1 B) and one float32 normal per variation term in use (4 B each);
* with IR drop: G_eff (float32, 4 B) and the float64 conductances handed to the solver (8 B);
* read operands derived from G_eff: about two float32 copies (8 B).

The exact IR-drop solve needs :func:`engine.irdrop.solve_bytes_per_tile` per tile of a chunk;
chunks are sized to the solve budget, so a layer of any size solves within it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .hardware import HardwareSpec
from .irdrop import solve_bytes_per_tile
from .tiling import TileGrid


@dataclass(frozen=True)
class LayerFootprint:
    name: str
    tiles: int  # physical array tiles, both arrays of a pair counted
    cells: int
    state_bytes: int  # resident programmed state of one instance
    solve_bytes_per_tile: int  # 0 without exact IR drop


def state_bytes_per_cell(hw: HardwareSpec) -> int:
    var = hw.variation
    per_cell = 8 + 4 + 8
    per_cell += 1 if hw.faults.enabled else 0
    per_cell += 4 * (var.absolute + (var.sigma_rel > 0))
    per_cell += (4 + 8) if hw.ir_drop.enabled else 0
    return per_cell


def _layer_shapes(model: nn.Module, keep_digital: Iterable[str]) -> list[tuple[str, int, int, int]]:
    """(name, groups, k, n) of every Linear/Conv2d that goes on crossbars (``convert``'s rules)."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    names = [n for n, _ in layers]
    keep = {names[0] if k == "first" else names[-1] if k == "last" else k for k in keep_digital if names}
    out = []
    for name, m in layers:
        if name in keep:
            continue
        if isinstance(m, nn.Conv2d):
            g = m.groups
            out.append((name, g, (m.in_channels // g) * m.kernel_size[0] * m.kernel_size[1], m.out_channels // g))
        else:
            out.append((name, 1, m.in_features, m.out_features))
    return out


def footprint(model: nn.Module, hw: HardwareSpec, keep_digital: Iterable[str] = ()) -> list[LayerFootprint]:
    """Per-layer tile counts and resident bytes of one programmed instance of ``model`` on ``hw``."""
    exact = hw.ir_drop.enabled and hw.ir_drop.model == "exact"
    dtype = torch.float32 if hw.ir_drop.solver_dtype == "float32" else torch.float64
    per_tile = solve_bytes_per_tile(hw.crossbar.rows, hw.crossbar.cols, dtype) if exact else 0
    per_cell = state_bytes_per_cell(hw)
    out = []
    for name, groups, k, n in _layer_shapes(model, keep_digital):
        grid = TileGrid.for_layer(hw, groups, k, n)
        tiles = grid.arrays * grid.groups * grid.t_r * grid.t_c
        cells = math.prod(grid.cell_shape)
        out.append(LayerFootprint(name, tiles, cells, cells * per_cell, per_tile))
    return out
