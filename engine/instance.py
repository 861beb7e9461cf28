"""Hardware instances: every static draw for every tile of a layer, from integer seeds.

A layer's programmed cells are stored as ``h`` = conductance above G_min in units of dG,
shape (instances, arrays, groups, t_r, t_c, rows, cols); level L programmed ideally gives
h = L, a cell stuck at G_max gives h = 2**b - 1, stuck at G_min h = 0. Keeping G_min out of
``h`` keeps the ideal path in exact integer arithmetic; the G_min term is added back where
physics needs it (digital subtraction baselines, read noise).

Random draws per (seed, layer): one uniform per cell for faults, and one standard normal per
cell for each variation term in use, absolute and relative (see :mod:`engine.seeding`,
:mod:`engine.nonideal.faults`, :mod:`engine.nonideal.variation`). Streams a spec does not use
are not drawn; since every stream has its own spawn key, skipping one never shifts another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from . import seeding
from .hardware import HardwareSpec
from .nonideal.faults import apply_faults, fault_codes
from .nonideal.variation import apply_variation


@dataclass
class LayerCells:
    """One layer's programmed cells for I instances, in the physical tile layout."""

    h: torch.Tensor  # (I, A, G, t_r, t_c, R, C) float32
    faults: torch.Tensor | None  # same shape, int8 codes, None when no faults
    seeds: tuple[int, ...] | None  # None for the ideal (fault- and variation-free) crossbar
    levels: torch.Tensor | None = None  # target levels programmed, (A, G, t_r, t_c, R, C) or per instance
    # Digital compensation read alongside the array (PytorX Alg. 2): a conductance-like matrix
    # whose read is digitised by its own ADC conversion and added to the column outputs.
    correction: torch.Tensor | None = None
    # Row remapping (Jung's row permutation / row flipping): logical row r of a tile is stored on
    # physical row row_source[..., r], with the two arrays swapped (input negated) where flipped.
    row_source: torch.Tensor | None = None  # (I, G, t_r, t_c, R) int64
    row_flipped: torch.Tensor | None = None  # (I, G, t_r, t_c, R) bool

    @property
    def n_instances(self) -> int:
        return self.h.shape[0]


def _draw(seeds: Sequence[int], layer_index: int, kind: int, shape: tuple[int, ...], normal: bool) -> torch.Tensor:
    # One generator per instance (its own stream), stacked: instances stay independent of how
    # many are sampled together.
    out = np.empty((len(seeds), *shape), dtype=np.float32)
    for i, seed in enumerate(seeds):
        gen = seeding.numpy_generator(seed, layer_index, kind)
        if normal:
            gen.standard_normal(shape, dtype=np.float32, out=out[i])
        else:
            gen.random(shape, dtype=np.float32, out=out[i])
    return torch.from_numpy(out)


def sample_cells(levels: torch.Tensor, hw: HardwareSpec, seeds: Sequence[int] | None, layer_index: int) -> LayerCells:
    """Programmed cells of one layer for each seed (``seeds=None``: the ideal crossbar).

    ``levels``: target levels (A, G, t_r, t_c, R, C), or (I, A, ...) with one target per instance
    (after a row remapping). The draws depend only on the seed and the cell positions, so the
    same seed gives the same physical faults and variation whatever is programmed."""
    device = levels.device
    per_instance = levels.dim() == 7
    h = levels.to(torch.float32) if per_instance else levels.to(torch.float32).unsqueeze(0)
    if seeds is None:
        return LayerCells(h=h, faults=None, seeds=None, levels=levels)
    h = h.cpu()  # static draws are made on the CPU so an instance is the same on every device
    seeds = tuple(int(s) for s in seeds)
    shape = tuple(levels.shape[1:] if per_instance else levels.shape)
    h = h.expand(len(seeds), *shape)
    dev = hw.device
    var = hw.variation
    if var.enabled:
        has_abs = var.sigma_abs_s > 0 or var.sigma_abs_delta_g > 0
        z_abs = _draw(seeds, layer_index, seeding.VARIATION, shape, normal=True) if has_abs else None
        z_rel = _draw(seeds, layer_index, seeding.VARIATION_REL, shape, normal=True) if var.sigma_rel > 0 else None
        g_min_n = dev.g_min_s / dev.delta_g_s
        h = apply_variation(h + g_min_n, z_abs, z_rel, var, dev.delta_g_s) - g_min_n
    codes = None
    if hw.faults.enabled:
        u = _draw(seeds, layer_index, seeding.FAULTS, shape, normal=False)
        codes = fault_codes(u, hw.faults)
        h = apply_faults(h, codes, dev.levels - 1)
    return LayerCells(
        h=h.contiguous().to(device), faults=None if codes is None else codes.to(device), seeds=seeds, levels=levels
    )
