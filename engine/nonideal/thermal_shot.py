"""Thermal + shot read noise, PytorX eq. 1-2.

Per cell and read, a zero-mean Gaussian current with i_rms^2 = G f (4 k_B T + 2 q |V|) (eq. 1);
eq. 2 is the same quantity referred to conductance, g_rms = i_rms / V. Cells on one bit line
are independent, so the bit-line noise is exactly Gaussian with variance
    sigma^2 = f (4 k_B T sum_i G_i + 2 q sum_i |V_i| G_i),
which we draw directly (one draw per bit line per read instead of one per cell).
In the engine's units (conductance dG, voltage dV_DAC, current dG dV_DAC):
    sigma_n^2 = f (4 k_B T sum_i g_i + 2 q dV sum_i |v_i| g_i) / (dG dV^2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from scipy import constants

from ..hardware import HardwareSpec
from .base import ProgramContext, ReadContext, ReadEffect


@dataclass(frozen=True)
class ThermalShotCoefficients:
    """sigma_n^2 = thermal * sum_i g_i + shot * sum_i |v_i| g_i (engine units)."""

    thermal: float
    shot: float

    @classmethod
    def for_read(cls, frequency_hz: float, temperature_k: float, delta_g_s: float, delta_v_v: float):
        denom = delta_g_s * delta_v_v**2
        return cls(
            thermal=frequency_hz * 4.0 * constants.k * temperature_k / denom,
            shot=frequency_hz * 2.0 * constants.e * delta_v_v / denom,
        )


def cell_current_rms(g_s: float, v_v: float, frequency_hz: float, temperature_k: float) -> float:
    """PytorX eq. 1 for one cell, in amperes (reference for tests and docs)."""
    return (g_s * frequency_hz * (4 * constants.k * temperature_k + 2 * constants.e * abs(v_v))) ** 0.5


class ThermalShot(ReadEffect):
    """Read effect: the bit-line Gaussian of PytorX eq. 1 above, one draw per bit line and read."""

    name = "read_noise"

    def used(self, hw: HardwareSpec) -> bool:
        return hw.read_noise.enabled

    def operands(self, ctx: ProgramContext) -> dict[str, Any]:
        return {"g": ctx.op.operand(ctx.g_phys), "g_colsum": ctx.g_phys.sum(-2, keepdim=True)}

    def add_noise(
        self, current: torch.Tensor, v: torch.Tensor, ops: Mapping[str, Any], ctx: ReadContext
    ) -> torch.Tensor:
        hw = ctx.hw
        c = ThermalShotCoefficients.for_read(hw.frequency_hz, hw.temperature_k, hw.device.delta_g_s, ctx.delta_v_v)
        var = c.thermal * ops["g_colsum"] + c.shot * ctx.op.apply(v.abs(), ops["g"])
        return current + var.sqrt() * ctx.randn(var.shape, var)
