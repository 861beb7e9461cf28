"""Column AWGN, Yu Sec. II-B.1: every sensed column current reads J_n = J + n, n ~ N(0, sigma_n^2),
per read; ``column_awgn.sigma_lsb`` is sigma_n in units of dG * dV_DAC (one unit of the integer MAC;
Yu's sigma_n^2 = 0.4608 is ``sigma_lsb: 0.6788`` with 1-bit cells and DAC)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..hardware import HardwareSpec
from .base import ProgramContext, ReadContext, ReadEffect


class ColumnAWGN(ReadEffect):
    name = "column_awgn"
    stage = "column"

    def used(self, hw: HardwareSpec) -> bool:
        return hw.column_awgn.enabled

    def operands(self, ctx: ProgramContext) -> dict[str, Any]:
        return {}

    def add_noise(
        self, current: torch.Tensor, v: torch.Tensor, ops: Mapping[str, Any], ctx: ReadContext
    ) -> torch.Tensor:
        return current + ctx.hw.column_awgn.sigma_lsb * ctx.randn(current.shape, current)
