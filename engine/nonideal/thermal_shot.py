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

from dataclasses import dataclass

from scipy import constants


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
