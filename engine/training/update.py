"""Conductance update model, TxSim eq. 1 (Sec. IV-C, Fig. 4).

For an intended change dG_ideal of a device at conductance G, span S = G_max - G_min and
non-linearity factor v:
  potentiation (dG_ideal > 0): dG = (S / (1 - e^-v) + G_min - G) (1 - e^(-v dG_ideal / S))
  depression   (dG_ideal < 0): dG = (S / (1 - e^-v) - G_max + G) (1 - e^(-v dG_ideal / S))
plus write noise ~ N(0, (gamma sqrt(S) dG_ideal)^2) (TxSim Sec. IV-C: "standard deviation
gamma * sqrt(G_max - G_min) * G_ideal"); then the learning rate scales the non-ideal change
(TxSim Sec. IV-D: "dG_non-ideal is multiplied by the learning rate"), G <- G + lr dG, clipped to
[G_min, G_max]. As v -> 0 both cases tend to dG = dG_ideal (linear, symmetric); larger v makes
updates shrink as the device approaches the end it moves toward, and the two directions differ
(asymmetry).

Units of sqrt(S): TxSim does not state them. ``normalized`` (the default) takes conductances as
fractions of G_max, so sqrt(S) = sqrt(1 - G_min/G_max) (0.95 at TxSim's 100 kOhm..1 MOhm) and the
noise std of one write is ~gamma x |dG_ideal| of that write; ``siemens`` takes the formula literally
in siemens, where sqrt(S) ~ 0.003-0.02 and gamma = 10 is a few per cent of the step.

What one write is (``update.write_granularity``): TxSim's parallel update (Sec. IV-C) drives inputs
and errors onto rows and columns at once, so each example's rank-1 outer product x_b delta_b is one
write with its own noise; a batch's B writes then add in variance, and the noise of the batch step
has std gamma sqrt(S) sqrt(sum_b dG_b^2) (``example``, the default; ``noise_magnitude`` below).
``batch`` writes the whole step once (std gamma sqrt(S) |sum_b dG_b|), as a momentum accumulator
must. With ``example`` and normalised units TxSim Fig. 10 reproduces on LeNet-5 digits (README).
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
    noise_units: str = "normalized"  # "normalized" (conductances / G_max) or "siemens"

    @property
    def span(self) -> float:
        return self.g_max_s - self.g_min_s

    @property
    def noise_span_sqrt(self) -> float:
        """sqrt(G_max - G_min) in the chosen units."""
        return math.sqrt(self.span / self.g_max_s if self.noise_units == "normalized" else self.span)

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

    def apply(
        self,
        g: torch.Tensor,
        dg_ideal: torch.Tensor,
        lr: float = 1.0,
        generator: torch.Generator | None = None,
        noise_magnitude: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """New conductances: eq. 1 and write noise on the step before the learning rate, then
        G + lr dG clipped to [G_min, G_max]. ``noise_magnitude`` replaces |dG_ideal| in the noise's
        standard deviation: sqrt(sum_b dG_b^2) when the step is written as several rank-1 writes b
        whose independent noises add up (default: one write of dG_ideal)."""
        dg = self.nonlinear_step(g, dg_ideal)
        if self.write_noise > 0:
            # float32 draws (half the cost); the state stays in float64
            noise = torch.randn(g.shape, generator=generator, dtype=torch.float32, device=g.device).to(g.dtype)
            magnitude = dg_ideal.abs() if noise_magnitude is None else noise_magnitude
            dg = dg + (self.write_noise * self.noise_span_sqrt) * magnitude * noise
        return g.add(dg, alpha=lr).clamp_(self.g_min_s, self.g_max_s)
