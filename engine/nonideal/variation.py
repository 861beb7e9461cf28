"""Static programming variation (PytorX eq. 2 second term; RxNN sigma/mu; Jung R' = R(1+eps)).

Applied to the programmed conductance g = g_min + level (units of dG) with standard normals per
cell and instance, z_abs and z_rel, each from its own stream (drawn only when its sigma is
non-zero), so enabling one term does not change the other's draw, and sweeping sigma scales the
same z (coupled across points):
  absolute:           g' = g + sigma_abs * z_abs
  relative gaussian:  g' = g (1 + sigma_rel z_rel)  (evaluated as g + sigma_rel g z_rel)
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
    delta_g_s: float, inplace: bool = False,
) -> torch.Tensor:
    """``z_abs`` / ``z_rel`` may be None when their sigma is zero. ``inplace``: ``g`` is a fresh
    tensor of the result's shape that may be overwritten (saves passes over the cells)."""
    sigma_abs = spec.sigma_abs_s / delta_g_s if spec.sigma_abs_s > 0 else spec.sigma_abs_delta_g
    if not inplace:
        g = g.expand(torch.broadcast_shapes(g.shape, *(z.shape for z in (z_abs, z_rel) if z is not None))).clone()
    if spec.sigma_rel > 0:
        if spec.distribution == "gaussian":
            g.addcmul_(g, z_rel, value=spec.sigma_rel)  # g (1 + sigma z)
        else:
            s = math.sqrt(math.log1p(spec.sigma_rel**2))
            g.mul_(torch.exp(s * z_rel - 0.5 * s * s))
    if sigma_abs > 0:
        g.add_(z_abs, alpha=sigma_abs)
    return g.clamp_min_(0.0)
