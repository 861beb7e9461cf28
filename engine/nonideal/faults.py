"""Stuck-at faults (PytorX Sec. 2.1.1, Yu Sec. II-B.2, Jung Sec. IV-A).

Each cell gets one uniform 32-bit integer u per instance (:mod:`engine.counter_rng`), drawn
independently of the rates. A cell is stuck at G_max if u < floor(p_gmax 2**32) and stuck at G_min
if floor(p_gmax 2**32) <= u < floor((p_gmax + p_gmin) 2**32): integer thresholds, so the fault map
is the same on every device, and each probability is exact to 2**-32.
Because u does not depend on the rates, draws are *coupled* across sweep points: for the same
instance seed the set of stuck cells only grows with either rate, and the G_max set only grows
with p_gmax, so accuracy-vs-rate curves follow one growing fault set instead of independent
noise. A stuck cell reads exactly G_max or G_min: programming variation does not apply to it.
"""

from __future__ import annotations

import math

import torch

from ..counter_rng import U32_END, indicators
from ..hardware import HardwareSpec, StuckAtFaults
from .base import Draws, StaticEffect, Stream

HEALTHY = 0
STUCK_GMAX = 1
STUCK_GMIN = 2


def thresholds(spec: StuckAtFaults) -> tuple[int, int]:
    """Integer thresholds (G_max, G_max + G_min) on the 32-bit uniform."""
    p_max, p_min = spec.stuck_at_gmax_rate, spec.stuck_at_gmin_rate
    return math.floor(p_max * 2.0**32), math.floor(min(p_max + p_min, 1.0) * 2.0**32)


def fault_intervals(spec: StuckAtFaults) -> dict[str, tuple[int, int]]:
    """The fault map's intervals on the 32-bit draw u: healthy cells u >= t_all, stuck at G_max u < t_max."""
    t_max, t_all = thresholds(spec)
    return {"healthy": (t_all, U32_END), "at_gmax": (0, t_max)}


def fault_weights(u32: torch.Tensor, spec: StuckAtFaults) -> tuple[torch.Tensor, torch.Tensor]:
    """The fault map as float32 0/1 weights (healthy, stuck at G_max) from 32-bit uniform draws: int64
    values in [0, 2**32), or the raw int32 bits of :func:`engine.counter_rng.bits32`
    (:func:`engine.counter_rng.indicators` of :func:`fault_intervals`). Programming applies them in
    two arithmetic passes, h * healthy + (levels - 1) * at_gmax (:func:`apply_fault_weights_`)."""
    healthy, at_gmax = indicators(u32, list(fault_intervals(spec).values()))
    return healthy, at_gmax


def codes_from_weights(healthy: torch.Tensor, at_gmax: torch.Tensor) -> torch.Tensor:
    """int8 codes from :func:`fault_weights`: HEALTHY 0, STUCK_GMAX 1, STUCK_GMIN 2."""
    return (1.0 - healthy).mul_(STUCK_GMIN).sub_(at_gmax).to(torch.int8)


def fault_codes(u32: torch.Tensor, spec: StuckAtFaults) -> torch.Tensor:
    """int8 fault code per cell from its 32-bit uniform draw (see :func:`fault_weights`)."""
    return codes_from_weights(*fault_weights(u32, spec))


def apply_fault_weights_(
    h: torch.Tensor, healthy: torch.Tensor, at_gmax: torch.Tensor, full_level: int
) -> torch.Tensor:
    """In place: every stuck cell to G_min (h = 0), the G_max subset to the top level (h >= 0 is finite,
    so h * 0 = 0 and h * 1 + 0 = h exactly: the same values as overwriting the cells)."""
    return h.mul_(healthy).add_(at_gmax, alpha=float(full_level))


class StuckAt(StaticEffect):
    """Static effect: stuck cells read G_max or G_min whatever was programmed (after every conductance
    effect), from one 32-bit draw per cell (stream 0) cut at the rates' integer thresholds."""

    name = "faults"
    streams = (Stream("faults", 0, "intervals"),)
    acts_on = "level"

    def used(self, hw: HardwareSpec) -> tuple[Stream, ...]:
        return self.streams if hw.faults.enabled else ()

    def intervals(self, stream: Stream, hw: HardwareSpec) -> dict[str, tuple[int, int]]:
        return fault_intervals(hw.faults)

    def program(self, g: torch.Tensor, target: torch.Tensor, draws: Draws, hw: HardwareSpec) -> torch.Tensor:
        return apply_fault_weights_(g, draws["healthy"], draws["at_gmax"], hw.device.levels - 1)
