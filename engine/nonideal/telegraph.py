"""Random telegraph noise, PytorX eq. 3.

Ielmini's fit R_rtn / R = a R + b turns, with G = 1/R, into the conductance jump
    G_rtn = G (b G + a) / (G - (b G + a)),
read with probability ``occupancy`` (tau < 0.5) independently per cell and read:
G_act = G + G_rtn * B, B ~ Bernoulli(occupancy). The fit diverges for G <= a / (1 - b); cells
below G_min (possible after programming variation) use the jump of G_min scaled by G/G_min.
"""

from __future__ import annotations

import torch

from ..hardware import TelegraphNoise


def rtn_jump_s(g_s: torch.Tensor, spec: TelegraphNoise, g_min_s: float) -> torch.Tensor:
    """G_rtn in siemens for conductances ``g_s`` (siemens), PytorX eq. 3."""
    g = g_s.clamp_min(g_min_s)
    shift = spec.b * g + spec.a
    jump = g * shift / (g - shift)
    return torch.where(g_s < g_min_s, jump * g_s / g_min_s, jump)
