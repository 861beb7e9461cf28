"""Read-to-read conductance fluctuation, PytorX eq. 2's (dG/3)^2 term as a per-read draw.

Every cell reads G + sigma dG z with a fresh z ~ N(0, 1) per cell and read (``read_fluctuation.
sigma_delta_g``; PytorX's dG/3 is 0.3333). Summed exactly on each bit line, the fluctuation current
is Gaussian with variance (sigma dG)^2 sum_r V_r^2 - the same on every column of a tile, drawn
independently per column (engine units: sigma^2 sum_r v_r^2).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..hardware import HardwareSpec
from .base import ProgramContext, ReadContext, ReadEffect


class ReadFluctuation(ReadEffect):
    name = "read_fluctuation"

    def used(self, hw: HardwareSpec) -> bool:
        return hw.read_fluctuation.enabled

    def operands(self, ctx: ProgramContext) -> dict[str, Any]:
        i, g, tr, r, q = ctx.g_phys.shape
        ones = torch.ones((i, g, tr, r, 1), device=ctx.g_phys.device, dtype=ctx.g_phys.dtype)
        return {"row_ones": ctx.op.operand(ones), "columns": q}  # sums V^2 over a tile's rows

    def add_noise(
        self, current: torch.Tensor, v: torch.Tensor, ops: Mapping[str, Any], ctx: ReadContext
    ) -> torch.Tensor:
        var = ctx.hw.read_fluctuation.sigma_delta_g**2 * ctx.op.apply(v * v, ops["row_ones"])  # (I, G, t_r, P*M, 1)
        return current + var.sqrt() * ctx.randn((*var.shape[:-1], ops["columns"]), var)
