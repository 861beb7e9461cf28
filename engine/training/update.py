"""Conductance update model, TxSim eq. 1 (Sec. IV-C, Fig. 4).

For an intended change dG_ideal of a device at conductance G, span S = G_max - G_min and
non-linearity factor v:
  potentiation (dG_ideal > 0): dG = (S / (1 - e^-v) + G_min - G) (1 - e^(-v dG_ideal / S))
  depression   (dG_ideal < 0): dG = (S / (1 - e^-v) - G_max + G) (1 - e^(-v dG_ideal / S))
plus write noise ~ N(0, (gamma sqrt(S) dG_ideal)^2) (TxSim: "standard deviation
gamma * sqrt(G_max - G_min) * dG_ideal", with conductances in siemens as printed), and the result
is clipped to [G_min, G_max]. As v -> 0 both cases tend to dG = dG_ideal (linear, symmetric);
larger v makes updates shrink as the device approaches the end it moves toward, and the two
directions differ (asymmetry).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class UpdateModel:
    nonlinearity: float  # v
    write_noise: float  # gamma
    g_min_s: float
    g_max_s: float

    @property
    def span(self) -> float:
        return self.g_max_s - self.g_min_s

    def nonlinear_step(self, g: torch.Tensor, dg_ideal: torch.Tensor) -> torch.Tensor:
        """TxSim eq. 1 without noise or clipping."""
        v, span = self.nonlinearity, self.span
        if v < 1e-9:
            return dg_ideal
        amplitude = span / -math.expm1(-v)  # S / (1 - e^-v)
        shape = -torch.expm1(-v * dg_ideal / span)  # 1 - e^(-v dG_ideal / S)
        pot = (amplitude + self.g_min_s - g) * shape
        dep = (amplitude - self.g_max_s + g) * shape
        return torch.where(dg_ideal > 0, pot, dep)

    def apply(self, g: torch.Tensor, dg_ideal: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """New conductances: eq. 1, write noise, clipped to [G_min, G_max]."""
        dg = self.nonlinear_step(g, dg_ideal)
        if self.write_noise > 0:
            # float32 draws (half the cost); the state stays in float64
            noise = torch.randn(g.shape, generator=generator, dtype=torch.float32, device=g.device).to(g.dtype)
            dg = dg + self.write_noise * math.sqrt(self.span) * dg_ideal.abs() * noise
        return (g + dg).clamp_(self.g_min_s, self.g_max_s)
