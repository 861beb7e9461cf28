"""Static programming variation (PytorX eq. 2 second term; RxNN sigma/mu; Jung R' = R(1+eps)).

Applied to the programmed conductance g = g_min + level (units of dG) with standard normals per
cell and instance, z_abs and z_rel, each from its own stream (drawn only when its sigma is
non-zero), so enabling one term does not change the other's draw, and sweeping sigma scales the
same z (coupled across points):
  absolute:           g' = g + sigma_abs * z_abs
  relative gaussian:  g' = g (1 + sigma_rel z_rel)
  relative lognormal: g' = g exp(s z_rel - s^2/2), s^2 = ln(1 + sigma_rel^2)
                      (mean g, standard deviation sigma_rel g)
The result is floored at 0 S.
"""

from __future__ import annotations

import math

import torch

from ..hardware import ProgrammingVariation


def apply_variation(
    g: torch.Tensor, z_abs: torch.Tensor | None, z_rel: torch.Tensor | None, spec: ProgrammingVariation,
    delta_g_s: float,
) -> torch.Tensor:
    """``z_abs`` / ``z_rel`` may be None when their sigma is zero."""
    sigma_abs = spec.sigma_abs_s / delta_g_s if spec.sigma_abs_s > 0 else spec.sigma_abs_delta_g
    if spec.sigma_rel > 0:
        if spec.distribution == "gaussian":
            g = g * (1.0 + spec.sigma_rel * z_rel)
        else:
            s = math.sqrt(math.log1p(spec.sigma_rel**2))
            g = g * torch.exp(s * z_rel - 0.5 * s * s)
    if sigma_abs > 0:
        g = g + sigma_abs * z_abs
    return g.clamp_min(0.0)
