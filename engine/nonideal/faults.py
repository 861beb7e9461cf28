"""Stuck-at faults (PytorX Sec. 2.1.1, Yu Sec. II-B.2, Jung Sec. IV-A).

Each cell gets one uniform u ~ U(0, 1) per instance, drawn independently of the rates.
A cell is stuck at G_max if u < p_gmax and stuck at G_min if p_gmax <= u < p_gmax + p_gmin.
Because u does not depend on the rates, draws are *coupled* across sweep points: for the same
instance seed the set of stuck cells only grows with either rate, and the G_max set only grows
with p_gmax, so accuracy-vs-rate curves follow one growing fault set instead of independent
noise. A stuck cell reads exactly G_max or G_min: programming variation does not apply to it.
"""

from __future__ import annotations

import torch

from ..hardware import StuckAtFaults

HEALTHY = 0
STUCK_GMAX = 1
STUCK_GMIN = 2


def fault_codes(u: torch.Tensor, spec: StuckAtFaults) -> torch.Tensor:
    """int8 fault code per cell from its uniform draw."""
    p_max, p_min = spec.stuck_at_gmax_rate, spec.stuck_at_gmin_rate
    gmax = u < p_max
    gmin = (u < p_max + p_min) & ~gmax
    return gmax.to(torch.int8) * STUCK_GMAX + gmin.to(torch.int8) * STUCK_GMIN


def apply_faults(h: torch.Tensor, codes: torch.Tensor, full_level: int) -> torch.Tensor:
    """Force stuck cells; ``h`` is conductance above G_min in units of dG."""
    return h.masked_fill(codes == STUCK_GMAX, float(full_level)).masked_fill_(codes == STUCK_GMIN, 0.0)
