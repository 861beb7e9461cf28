"""Random telegraph noise, PytorX eq. 3.

Ielmini's fit R_rtn / R = a R + b turns, with G = 1/R, into the conductance jump
    G_rtn = G (b G + a) / (G - (b G + a)),
read with probability ``occupancy`` (tau < 0.5) independently per cell and read:
G_act = G + G_rtn * B, B ~ Bernoulli(occupancy). The fit diverges for G <= a / (1 - b); cells
below G_min (possible after programming variation) use the jump of G_min scaled by G/G_min.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..hardware import HardwareSpec, TelegraphNoise
from .base import ProgramContext, ReadContext, ReadEffect


def rtn_jump_s(g_s: torch.Tensor, spec: TelegraphNoise, g_min_s: float) -> torch.Tensor:
    """G_rtn in siemens for conductances ``g_s`` (siemens), PytorX eq. 3."""
    g = g_s.clamp_min(g_min_s)
    shift = spec.b * g + spec.a
    jump = g * shift / (g - shift)
    return torch.where(g_s < g_min_s, jump * g_s / g_min_s, jump)


class Telegraph(ReadEffect):
    """Read effect: each cell's jump G_rtn (above) with probability ``occupancy`` per read - drawn per
    cell (``sampling: exact``, Bernoulli states) or as the exact mean and variance of the Bernoulli sum
    on each bit line (``gaussian``)."""

    name = "rtn"

    def used(self, hw: HardwareSpec) -> bool:
        return hw.rtn.enabled

    def needs_cell_draws(self, hw: HardwareSpec) -> bool:
        return hw.rtn.sampling == "exact"

    def operands(self, ctx: ProgramContext) -> dict[str, Any]:
        hw = ctx.hw
        dg = hw.device.delta_g_s
        rtn = rtn_jump_s(ctx.g_phys * dg, hw.rtn, hw.device.g_min_s) / dg
        if self.needs_cell_draws(hw):
            return {"rtn": rtn.contiguous()}
        return {"rtn": ctx.op.operand(rtn), "rtn_sq": ctx.op.operand(rtn * rtn)}

    def add_noise(
        self, current: torch.Tensor, v: torch.Tensor, ops: Mapping[str, Any], ctx: ReadContext
    ) -> torch.Tensor:
        p = ctx.hw.rtn.occupancy
        rtn = ops["rtn"]
        if "rtn_sq" not in ops:  # exact: one Bernoulli state per cell and read
            occupied = ctx.rand((*v.shape, rtn.shape[-1]), v) < p  # (I, G, t_r, PM, R, Q)
            return current + torch.einsum("igtmr,igtmrq,igtrq->igtmq", v, occupied.to(v.dtype), rtn)
        mean = p * ctx.op.apply(v, rtn)
        var = (p * (1 - p)) * ctx.op.apply(v * v, ops["rtn_sq"])
        return current + mean + var.clamp_min(0).sqrt() * ctx.randn(var.shape, var)
